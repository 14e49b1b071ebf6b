//! Rule ids. A policy's rules are its built-in checks (`checks:`, ids in `CheckId`) and,
//! beside them, rules written in CEL; every rule has a `RuleId`, and modes, exemptions,
//! verdicts, metrics and reports work on that id alone, never asking which kind of rule it is.

use std::fmt;
use std::sync::{Arc, LazyLock};

use super::{Checks, Mode, PssCheck};

/// A rule's stable id, as written in policy files and shown in messages, metrics, logs and
/// reports. Cloning one is a reference count.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(Arc<str>);

impl RuleId {
    pub fn new(id: &str) -> Self {
        Self(Arc::from(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl PartialEq<str> for RuleId {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl<'de> serde::Deserialize<'de> for RuleId {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let s = String::deserialize(de)?;
        Ok(Self(Arc::from(s)))
    }
}

/// The built-in checks: the keys of a policy's `checks:`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CheckId {
    RunAsNonRoot,
    LivenessProbe,
    ReadinessProbe,
    ResourceLimits,
    PssPrivileged,
    PssHostNamespaces,
    PssHostPathVolumes,
    PssHostPorts,
    PssCapabilitiesBaseline,
    PssCapabilitiesRestricted,
    PssSeccomp,
    PssProcMount,
    PssSelinux,
    PssApparmor,
    PssSysctls,
    PssWindowsHostProcess,
    PssHostProbes,
    PssVolumeTypes,
    PssPrivilegeEscalation,
    PssRunAsNonRoot,
    PssRunAsUser,
}

impl CheckId {
    pub const ALL: [CheckId; 21] = [
        Self::RunAsNonRoot,
        Self::LivenessProbe,
        Self::ReadinessProbe,
        Self::ResourceLimits,
        Self::PssPrivileged,
        Self::PssHostNamespaces,
        Self::PssHostPathVolumes,
        Self::PssHostPorts,
        Self::PssCapabilitiesBaseline,
        Self::PssCapabilitiesRestricted,
        Self::PssSeccomp,
        Self::PssProcMount,
        Self::PssSelinux,
        Self::PssApparmor,
        Self::PssSysctls,
        Self::PssWindowsHostProcess,
        Self::PssHostProbes,
        Self::PssVolumeTypes,
        Self::PssPrivilegeEscalation,
        Self::PssRunAsNonRoot,
        Self::PssRunAsUser,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The category a report files the check under, in the words Kyverno's policies use.
    pub fn category(self) -> &'static str {
        match self {
            Self::RunAsNonRoot
            | Self::LivenessProbe
            | Self::ReadinessProbe
            | Self::ResourceLimits => "Best Practices",
            Self::PssCapabilitiesRestricted
            | Self::PssVolumeTypes
            | Self::PssPrivilegeEscalation
            | Self::PssRunAsNonRoot
            | Self::PssRunAsUser => "Pod Security Standards (Restricted)",
            _ => "Pod Security Standards (Baseline)",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RunAsNonRoot => "run-as-non-root",
            Self::LivenessProbe => "liveness-probe",
            Self::ReadinessProbe => "readiness-probe",
            Self::ResourceLimits => "resource-limits",
            Self::PssPrivileged => "pss-privileged",
            Self::PssHostNamespaces => "pss-host-namespaces",
            Self::PssHostPathVolumes => "pss-host-path-volumes",
            Self::PssHostPorts => "pss-host-ports",
            Self::PssCapabilitiesBaseline => "pss-capabilities-baseline",
            Self::PssCapabilitiesRestricted => "pss-capabilities-restricted",
            Self::PssSeccomp => "pss-seccomp",
            Self::PssProcMount => "pss-proc-mount",
            Self::PssSelinux => "pss-selinux",
            Self::PssApparmor => "pss-apparmor",
            Self::PssSysctls => "pss-sysctls",
            Self::PssWindowsHostProcess => "pss-windows-host-process",
            Self::PssHostProbes => "pss-host-probes",
            Self::PssVolumeTypes => "pss-volume-types",
            Self::PssPrivilegeEscalation => "pss-privilege-escalation",
            Self::PssRunAsNonRoot => "pss-run-as-non-root",
            Self::PssRunAsUser => "pss-run-as-user",
        }
    }
}

impl<'de> serde::Deserialize<'de> for CheckId {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let s = String::deserialize(de)?;
        Self::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a check id")))
    }
}

/// The built-in checks' rule ids, made once.
static CHECK_RULES: LazyLock<Vec<RuleId>> = LazyLock::new(|| {
    CheckId::ALL
        .iter()
        .map(|c| RuleId::new(c.as_str()))
        .collect()
});

impl CheckId {
    /// This check's rule id.
    pub fn rule(self) -> RuleId {
        CHECK_RULES[self as usize].clone()
    }
}

/// Every configured control with its mode.
pub(super) fn pss_configured(checks: &Checks) -> impl Iterator<Item = (CheckId, Mode)> + '_ {
    let plain: [(CheckId, &Option<PssCheck>); 15] = [
        (CheckId::PssPrivileged, &checks.pss_privileged),
        (CheckId::PssHostNamespaces, &checks.pss_host_namespaces),
        (CheckId::PssHostPathVolumes, &checks.pss_host_path_volumes),
        (CheckId::PssHostPorts, &checks.pss_host_ports),
        (
            CheckId::PssCapabilitiesBaseline,
            &checks.pss_capabilities_baseline,
        ),
        (
            CheckId::PssCapabilitiesRestricted,
            &checks.pss_capabilities_restricted,
        ),
        (CheckId::PssSelinux, &checks.pss_selinux),
        (CheckId::PssApparmor, &checks.pss_apparmor),
        (CheckId::PssSysctls, &checks.pss_sysctls),
        (
            CheckId::PssWindowsHostProcess,
            &checks.pss_windows_host_process,
        ),
        (CheckId::PssHostProbes, &checks.pss_host_probes),
        (CheckId::PssVolumeTypes, &checks.pss_volume_types),
        (
            CheckId::PssPrivilegeEscalation,
            &checks.pss_privilege_escalation,
        ),
        (CheckId::PssRunAsNonRoot, &checks.pss_run_as_non_root),
        (CheckId::PssRunAsUser, &checks.pss_run_as_user),
    ];
    let leveled = [
        (CheckId::PssSeccomp, &checks.pss_seccomp),
        (CheckId::PssProcMount, &checks.pss_proc_mount),
    ];
    plain
        .into_iter()
        .filter_map(|(id, c)| c.as_ref().map(|c| (id, c.mode)))
        .chain(
            leveled
                .into_iter()
                .filter_map(|(id, c)| c.as_ref().map(|c| (id, c.mode))),
        )
}

#[cfg(test)]
mod tests {
    use super::CheckId;

    #[test]
    fn all_lists_the_checks_in_declaration_order() {
        for (i, c) in CheckId::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            assert_eq!(c.rule().as_str(), c.as_str());
        }
    }
}
