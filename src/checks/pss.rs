//! The Pod Security Standards, v1.35 level, one portcullis check per control. Each judges the
//! pod spec the way kube-apiserver's Pod Security Admission does: containers, init containers
//! and ephemeral containers, pod-level and container-level fields, and Windows pods exempt
//! only where the standard exempts them. Value sets are allow-lists, so anything the standard
//! has not reviewed (a capability, a sysctl, a volume type newer than this build) is denied.

use k8s_openapi::api::core::v1::{
    LifecycleHandler, PodSpec, Probe, SELinuxOptions, SeccompProfile, Volume,
};

use super::{ContainerRef, Finding, Target};
use crate::policy::{CheckId, Checks, PssLevel, PssLeveledCheck};
use crate::verdict::{FieldPath, Fix, Subject, Text};
use crate::workload::pod_spec_field;

/// The level seccomp or procMount is configured at (the two controls that differ by level).
fn level(check: &Option<PssLeveledCheck>) -> PssLevel {
    check.as_ref().map_or(PssLevel::Baseline, |c| c.level)
}

/// The findings of control `id`, configured in `checks`.
pub fn check(id: CheckId, checks: &Checks, t: &Target) -> Vec<Finding> {
    let mut out = Vec::new();
    match id {
        CheckId::PssPrivileged => privileged(t, &mut out),
        CheckId::PssHostNamespaces => host_namespaces(t, &mut out),
        CheckId::PssHostPathVolumes => host_path_volumes(t, &mut out),
        CheckId::PssHostPorts => host_ports(t, &mut out),
        CheckId::PssCapabilitiesBaseline => capabilities_baseline(t, &mut out),
        CheckId::PssCapabilitiesRestricted => capabilities_restricted(t, &mut out),
        CheckId::PssSeccomp => seccomp(t, level(&checks.pss_seccomp), &mut out),
        CheckId::PssProcMount => proc_mount(t, level(&checks.pss_proc_mount), &mut out),
        CheckId::PssSelinux => selinux(t, &mut out),
        CheckId::PssApparmor => apparmor(t, &mut out),
        CheckId::PssSysctls => sysctls(t, &mut out),
        CheckId::PssWindowsHostProcess => windows_host_process(t, &mut out),
        CheckId::PssHostProbes => host_probes(t, &mut out),
        CheckId::PssVolumeTypes => volume_types(t, &mut out),
        CheckId::PssPrivilegeEscalation => privilege_escalation(t, &mut out),
        CheckId::PssRunAsNonRoot => run_as_non_root(t, &mut out),
        CheckId::PssRunAsUser => run_as_user(t, &mut out),
        CheckId::RunAsNonRoot
        | CheckId::LivenessProbe
        | CheckId::ReadinessProbe
        | CheckId::ResourceLimits => {}
    }
    out
}

fn on_container(
    t: &Target,
    c: &ContainerRef,
    field: &'static str,
    problem: Text,
    fix: impl Into<Text>,
) -> Finding {
    Finding {
        subject: c.subject(),
        field: t.container_field(c, field),
        problem,
        fix: fix.into(),
        add: compliant_value(field).map(|(path, value)| Fix {
            at: t.container_path(c),
            yaml: nested_yaml(path, value).into(),
        }),
    }
}

fn on_pod(t: &Target, field: impl Into<Text>, problem: Text, fix: impl Into<Text>) -> Finding {
    let field = field.into();
    let add = compliant_value(&field).map(|(path, value)| Fix {
        at: t.pod_field(""),
        yaml: nested_yaml(path, value).into(),
    });
    Finding {
        subject: Subject::Pod,
        field: t.pod_field(field),
        problem,
        fix: fix.into(),
        add,
    }
}

/// For the fields where one value always complies, that value (and where to set it). Fields
/// whose fix is removing something, or choosing among values, keep the fix in words.
fn compliant_value(field: &str) -> Option<(&str, &'static str)> {
    Some(match field {
        "hostNetwork" | "hostPID" | "hostIPC" => (field, "false"),
        "securityContext.privileged"
        | "securityContext.allowPrivilegeEscalation"
        | "securityContext.windowsOptions.hostProcess" => (field, "false"),
        "securityContext.runAsNonRoot" => (field, "true"),
        "securityContext.capabilities.drop" => (field, "[ALL]"),
        "securityContext.procMount" => (field, "Default"),
        "securityContext.seccompProfile" | "securityContext.seccompProfile.type" => {
            ("securityContext.seccompProfile", "{type: RuntimeDefault}")
        }
        _ => return None,
    })
}

/// `a.b.c` and `v` as block YAML: `a:\n  b:\n    c: v`.
fn nested_yaml(path: &str, value: &str) -> String {
    let parts: Vec<&str> = path.split('.').collect();
    let mut yaml = String::new();
    for (depth, part) in parts.iter().enumerate() {
        if depth > 0 {
            yaml.push('\n');
        }
        yaml.push_str(&"  ".repeat(depth));
        yaml.push_str(part);
        yaml.push(':');
    }
    yaml.push(' ');
    yaml.push_str(value);
    yaml
}

/// Windows pods are exempt from the Linux-only restricted controls (since v1.25).
fn is_windows(spec: &PodSpec) -> bool {
    spec.os.as_ref().is_some_and(|os| os.name == "windows")
}

fn privileged(t: &Target, out: &mut Vec<Finding>) {
    for c in t.containers() {
        if c.security_context.and_then(|s| s.privileged) == Some(true) {
            out.push(on_container(
                t,
                &c,
                "securityContext.privileged",
                "is privileged (securityContext.privileged: true)".into(),
                "remove securityContext.privileged or set it to false",
            ));
        }
    }
}

fn host_namespaces(t: &Target, out: &mut Vec<Finding>) {
    let s = t.spec;
    for (field, value) in [
        ("hostNetwork", s.host_network),
        ("hostPID", s.host_pid),
        ("hostIPC", s.host_ipc),
    ] {
        if value == Some(true) {
            out.push(on_pod(
                t,
                field,
                format!("shares a host namespace ({field}: true)").into(),
                format!("remove {field} or set it to false"),
            ));
        }
    }
}

fn host_path_volumes(t: &Target, out: &mut Vec<Finding>) {
    for (i, v) in t.spec.volumes.iter().flatten().enumerate() {
        if v.host_path.is_some() {
            out.push(on_pod(
                t,
                format!("volumes[{i}].hostPath"),
                format!("mounts the host path volume {:?}", v.name).into(),
                "use a configMap, secret, emptyDir or persistentVolumeClaim volume instead",
            ));
        }
    }
}

fn host_ports(t: &Target, out: &mut Vec<Finding>) {
    for c in t.containers() {
        let ports: Vec<String> = c
            .ports
            .iter()
            .filter_map(|p| p.host_port)
            .filter(|&p| p != 0)
            .map(|p| p.to_string())
            .collect();
        if !ports.is_empty() {
            out.push(on_container(
                t,
                &c,
                "ports",
                format!("binds host port {}", ports.join(", ")).into(),
                "remove hostPort (expose the port through a Service)",
            ));
        }
    }
}

const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

fn added_capabilities<'a>(c: &ContainerRef<'a>) -> &'a [String] {
    c.security_context
        .and_then(|s| s.capabilities.as_ref())
        .and_then(|caps| caps.add.as_deref())
        .unwrap_or_default()
}

fn capabilities_baseline(t: &Target, out: &mut Vec<Finding>) {
    for c in t.containers() {
        let extra: Vec<&str> = added_capabilities(&c)
            .iter()
            .map(String::as_str)
            .filter(|cap| !BASELINE_CAPABILITIES.contains(cap))
            .collect();
        if !extra.is_empty() {
            out.push(on_container(t, &c, "securityContext.capabilities.add",
                format!("adds capabilities {}", extra.join(", ")).into(),
                "add only AUDIT_WRITE, CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, MKNOD, NET_BIND_SERVICE, SETFCAP, SETGID, SETPCAP, SETUID or SYS_CHROOT"));
        }
    }
}

fn capabilities_restricted(t: &Target, out: &mut Vec<Finding>) {
    if is_windows(t.spec) {
        return;
    }
    for c in t.containers() {
        let caps = c.security_context.and_then(|s| s.capabilities.as_ref());
        let drops_all = caps
            .and_then(|c| c.drop.as_ref())
            .is_some_and(|d| d.iter().any(|cap| cap == "ALL"));
        if !drops_all {
            out.push(on_container(
                t,
                &c,
                "securityContext.capabilities.drop",
                "does not drop all capabilities".into(),
                "set securityContext.capabilities.drop: [ALL]",
            ));
        }
        let extra: Vec<&str> = added_capabilities(&c)
            .iter()
            .map(String::as_str)
            .filter(|cap| *cap != "NET_BIND_SERVICE")
            .collect();
        if !extra.is_empty() {
            out.push(on_container(
                t,
                &c,
                "securityContext.capabilities.add",
                format!("adds capabilities {}", extra.join(", ")).into(),
                "add only NET_BIND_SERVICE",
            ));
        }
    }
}

fn seccomp_type(p: Option<&SeccompProfile>) -> Option<&str> {
    p.map(|p| p.type_.as_str())
}

fn seccomp(t: &Target, level: PssLevel, out: &mut Vec<Finding>) {
    let pod = seccomp_type(
        t.pod_security_context()
            .and_then(|s| s.seccomp_profile.as_ref()),
    );
    let restricted = level == PssLevel::Restricted;
    if restricted && is_windows(t.spec) {
        return;
    }
    let allowed = |ty: &str| {
        if restricted {
            ty == "RuntimeDefault" || ty == "Localhost"
        } else {
            ty != "Unconfined"
        }
    };
    let fix = "set seccompProfile.type to RuntimeDefault or Localhost";
    if let Some(ty) = pod.filter(|ty| !allowed(ty)) {
        out.push(on_pod(
            t,
            "securityContext.seccompProfile.type",
            format!("sets seccompProfile.type: {ty}").into(),
            fix,
        ));
    }
    for c in t.containers() {
        match seccomp_type(c.security_context.and_then(|s| s.seccomp_profile.as_ref())) {
            Some(ty) if !allowed(ty) => out.push(on_container(t, &c, "securityContext.seccompProfile.type",
                format!("sets seccompProfile.type: {ty}").into(), fix)),
            None if restricted && pod.is_none() => out.push(on_container(t, &c, "securityContext.seccompProfile",
                "has no seccomp profile".into(),
                "set securityContext.seccompProfile.type: RuntimeDefault on the pod or the container")),
            _ => {}
        }
    }
}

fn proc_mount(t: &Target, level: PssLevel, out: &mut Vec<Finding>) {
    // Baseline allows any /proc mount inside a user namespace; restricted never does.
    if level == PssLevel::Baseline && t.spec.host_users == Some(false) {
        return;
    }
    for c in t.containers() {
        if let Some(mount) = c
            .security_context
            .and_then(|s| s.proc_mount.as_deref())
            .filter(|m| *m != "Default")
        {
            out.push(on_container(
                t,
                &c,
                "securityContext.procMount",
                format!("sets procMount: {mount}").into(),
                "remove securityContext.procMount or set it to Default",
            ));
        }
    }
}

const SELINUX_TYPES: &[&str] = &[
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

fn selinux_problems(o: &SELinuxOptions) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(ty) = o.type_.as_deref().filter(|ty| !SELINUX_TYPES.contains(ty)) {
        problems.push(format!("type {ty}"));
    }
    for (name, value) in [("user", &o.user), ("role", &o.role)] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            problems.push(format!("{name} {v}"));
        }
    }
    problems
}

fn selinux(t: &Target, out: &mut Vec<Finding>) {
    let fix = "use seLinuxOptions.type container_t, container_init_t, container_kvm_t or container_engine_t, and leave user and role unset";
    if let Some(o) = t
        .pod_security_context()
        .and_then(|s| s.se_linux_options.as_ref())
    {
        let problems = selinux_problems(o);
        if !problems.is_empty() {
            out.push(on_pod(
                t,
                "securityContext.seLinuxOptions",
                format!("sets SELinux {}", problems.join(", ")).into(),
                fix,
            ));
        }
    }
    for c in t.containers() {
        if let Some(o) = c.security_context.and_then(|s| s.se_linux_options.as_ref()) {
            let problems = selinux_problems(o);
            if !problems.is_empty() {
                out.push(on_container(
                    t,
                    &c,
                    "securityContext.seLinuxOptions",
                    format!("sets SELinux {}", problems.join(", ")).into(),
                    fix,
                ));
            }
        }
    }
}

const APPARMOR_ANNOTATION: &str = "container.apparmor.security.beta.kubernetes.io/";

fn apparmor(t: &Target, out: &mut Vec<Finding>) {
    let fix = "use an AppArmor profile of type RuntimeDefault or Localhost";
    let bad = |ty: &str| ty != "RuntimeDefault" && ty != "Localhost";
    if let Some(ty) = t
        .pod_security_context()
        .and_then(|s| s.app_armor_profile.as_ref())
        .map(|p| p.type_.as_str())
        .filter(|ty| bad(ty))
    {
        out.push(on_pod(
            t,
            "securityContext.appArmorProfile.type",
            format!("sets appArmorProfile.type: {ty}").into(),
            fix,
        ));
    }
    for c in t.containers() {
        if let Some(ty) = c
            .security_context
            .and_then(|s| s.app_armor_profile.as_ref())
            .map(|p| p.type_.as_str())
            .filter(|ty| bad(ty))
        {
            out.push(on_container(
                t,
                &c,
                "securityContext.appArmorProfile.type",
                format!("sets appArmorProfile.type: {ty}").into(),
                fix,
            ));
        }
    }
    // The deprecated per-container annotations still take effect on older nodes.
    let spec_field = pod_spec_field(t.kind);
    let meta = spec_field.strip_suffix("spec").unwrap_or("");
    for (key, value) in t.workload.pod_annotations() {
        if key.starts_with(APPARMOR_ANNOTATION)
            && value != "runtime/default"
            && !value.starts_with("localhost/")
        {
            out.push(Finding {
                subject: Subject::Pod,
                field: FieldPath {
                    leaf: format!("{meta}metadata.annotations[{key:?}]").into(),
                    ..FieldPath::default()
                },
                problem: format!("sets AppArmor annotation {key}: {value:?}").into(),
                fix: "set it to runtime/default or localhost/<profile>, or remove it".into(),
                add: None,
            });
        }
    }
}

const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

fn sysctls(t: &Target, out: &mut Vec<Finding>) {
    let unsafe_ones: Vec<&str> = t
        .pod_security_context()
        .and_then(|s| s.sysctls.as_ref())
        .into_iter()
        .flatten()
        .map(|s| s.name.as_str())
        .filter(|n| !SAFE_SYSCTLS.contains(n))
        .collect();
    if !unsafe_ones.is_empty() {
        out.push(on_pod(t, "securityContext.sysctls", format!("sets unsafe sysctls {}", unsafe_ones.join(", ")).into(),
            "remove them; only namespaced, isolated sysctls such as net.ipv4.ip_local_port_range are allowed"));
    }
}

fn windows_host_process(t: &Target, out: &mut Vec<Finding>) {
    let fix = "remove windowsOptions.hostProcess or set it to false";
    if t.pod_security_context()
        .and_then(|s| s.windows_options.as_ref())
        .and_then(|w| w.host_process)
        == Some(true)
    {
        out.push(on_pod(
            t,
            "securityContext.windowsOptions.hostProcess",
            "runs as a Windows HostProcess".into(),
            fix,
        ));
    }
    for c in t.containers() {
        if c.security_context
            .and_then(|s| s.windows_options.as_ref())
            .and_then(|w| w.host_process)
            == Some(true)
        {
            out.push(on_container(
                t,
                &c,
                "securityContext.windowsOptions.hostProcess",
                "runs as a Windows HostProcess".into(),
                fix,
            ));
        }
    }
}

fn probe_host(p: &Probe) -> Option<&str> {
    p.http_get
        .as_ref()
        .and_then(|h| h.host.as_deref())
        .or(p.tcp_socket.as_ref().and_then(|s| s.host.as_deref()))
        .filter(|h| !h.is_empty())
}

fn handler_host(h: &LifecycleHandler) -> Option<&str> {
    h.http_get
        .as_ref()
        .and_then(|h| h.host.as_deref())
        .or(h.tcp_socket.as_ref().and_then(|s| s.host.as_deref()))
        .filter(|h| !h.is_empty())
}

fn host_probes(t: &Target, out: &mut Vec<Finding>) {
    for c in t.containers() {
        let probes = [
            ("livenessProbe", c.liveness_probe),
            ("readinessProbe", c.readiness_probe),
            ("startupProbe", c.startup_probe),
        ];
        let mut targets: Vec<String> = probes
            .into_iter()
            .filter_map(|(name, p)| p.and_then(probe_host).map(|h| format!("{name} → {h}")))
            .collect();
        if let Some(l) = c.lifecycle {
            for (name, h) in [("postStart", &l.post_start), ("preStop", &l.pre_stop)] {
                if let Some(host) = h.as_ref().and_then(handler_host) {
                    targets.push(format!("lifecycle.{name} → {host}"));
                }
            }
        }
        if !targets.is_empty() {
            out.push(on_container(
                t,
                &c,
                "livenessProbe",
                format!("probes another host ({})", targets.join(", ")).into(),
                "remove the host field so probes and hooks reach the pod itself",
            ));
        }
    }
}

fn is_allowed_volume(v: &Volume) -> bool {
    v.config_map.is_some()
        || v.csi.is_some()
        || v.downward_api.is_some()
        || v.empty_dir.is_some()
        || v.ephemeral.is_some()
        || v.image.is_some()
        || v.persistent_volume_claim.is_some()
        || v.projected.is_some()
        || v.secret.is_some()
}

fn volume_types(t: &Target, out: &mut Vec<Finding>) {
    let fix = "use only configMap, csi, downwardAPI, emptyDir, ephemeral, image, persistentVolumeClaim, projected or secret volumes";
    for (i, v) in t.spec.volumes.iter().flatten().enumerate() {
        if is_allowed_volume(v) {
            continue;
        }
        let unknown = t
            .workload
            .unknown_volume_sources
            .iter()
            .find_map(|u| u.strip_prefix(&format!("{}:", v.name)));
        let kind = match (crate::workload::has_known_source(v), unknown) {
            (_, Some(source)) => format!("{source} (a type this portcullis build does not know)"),
            // No source at all: the apiserver defaults it to emptyDir before admission.
            (false, None) => continue,
            (true, None) => serde_json::to_value(v)
                .ok()
                .and_then(|j| {
                    j.as_object()
                        .and_then(|m| m.keys().find(|k| *k != "name").cloned())
                })
                .unwrap_or_default(),
        };
        out.push(on_pod(
            t,
            format!("volumes[{i}]"),
            format!("uses volume {:?} of restricted type {kind}", v.name).into(),
            fix,
        ));
    }
}

fn privilege_escalation(t: &Target, out: &mut Vec<Finding>) {
    if is_windows(t.spec) {
        return;
    }
    for c in t.containers() {
        if c.security_context
            .and_then(|s| s.allow_privilege_escalation)
            != Some(false)
        {
            out.push(on_container(
                t,
                &c,
                "securityContext.allowPrivilegeEscalation",
                "may escalate privileges".into(),
                "set securityContext.allowPrivilegeEscalation: false",
            ));
        }
    }
}

fn run_as_non_root(t: &Target, out: &mut Vec<Finding>) {
    let pod = t.pod_security_context().and_then(|s| s.run_as_non_root);
    if pod == Some(false) {
        out.push(on_pod(
            t,
            "securityContext.runAsNonRoot",
            "sets runAsNonRoot: false".into(),
            "set securityContext.runAsNonRoot: true",
        ));
    }
    for c in t.containers() {
        match c.security_context.and_then(|s| s.run_as_non_root) {
            Some(false) => out.push(on_container(
                t,
                &c,
                "securityContext.runAsNonRoot",
                "sets runAsNonRoot: false".into(),
                "set securityContext.runAsNonRoot: true",
            )),
            None if pod != Some(true) => out.push(on_container(
                t,
                &c,
                "securityContext.runAsNonRoot",
                "does not set runAsNonRoot: true".into(),
                "set securityContext.runAsNonRoot: true on the pod or the container",
            )),
            _ => {}
        }
    }
}

fn run_as_user(t: &Target, out: &mut Vec<Finding>) {
    let fix = "set runAsUser to a non-zero UID or remove it";
    if t.pod_security_context().and_then(|s| s.run_as_user) == Some(0) {
        out.push(on_pod(
            t,
            "securityContext.runAsUser",
            "runs as root (runAsUser: 0)".into(),
            fix,
        ));
    }
    for c in t.containers() {
        if c.security_context.and_then(|s| s.run_as_user) == Some(0) {
            out.push(on_container(
                t,
                &c,
                "securityContext.runAsUser",
                "runs as root (runAsUser: 0)".into(),
                fix,
            ));
        }
    }
}
