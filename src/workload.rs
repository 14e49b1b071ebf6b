//! The objects portcullis judges, in its own terms: a Pod or a pod controller reduced to the
//! metadata the checks read and the pod spec they judge. The wire module builds these from an
//! AdmissionReview; `check` builds them from manifests. Nothing here knows about JSON framing.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::PodSpec;
use serde::Deserialize;

/// The kinds whose pods portcullis judges. Any other kind is admitted untouched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
pub enum WorkloadKind {
    Pod,
    ReplicationController,
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    Job,
    CronJob,
}

impl WorkloadKind {
    pub const ALL: [Self; 8] = [
        Self::Pod,
        Self::ReplicationController,
        Self::Deployment,
        Self::StatefulSet,
        Self::DaemonSet,
        Self::ReplicaSet,
        Self::Job,
        Self::CronJob,
    ];

    /// Matches on group and kind, not version: with `matchPolicy: Equivalent` the apiserver
    /// converts to the version the webhook registered, and a kind never changes meaning
    /// between versions of the same group.
    pub fn from_group_kind(group: &str, kind: &str) -> Option<Self> {
        Some(match (group, kind) {
            ("", "Pod") => Self::Pod,
            ("", "ReplicationController") => Self::ReplicationController,
            ("apps", "Deployment") => Self::Deployment,
            ("apps", "StatefulSet") => Self::StatefulSet,
            ("apps", "DaemonSet") => Self::DaemonSet,
            ("apps", "ReplicaSet") => Self::ReplicaSet,
            ("batch", "Job") => Self::Job,
            ("batch", "CronJob") => Self::CronJob,
            _ => return None,
        })
    }

    /// The kind behind a resource name, as audit logs and RBAC name them (`apps`, `deployments`).
    pub fn from_group_resource(group: &str, resource: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.group() == group && k.resource() == resource)
    }

    pub fn group(self) -> &'static str {
        match self {
            Self::Pod | Self::ReplicationController => "",
            Self::Deployment | Self::StatefulSet | Self::DaemonSet | Self::ReplicaSet => "apps",
            Self::Job | Self::CronJob => "batch",
        }
    }

    /// The plural resource name: the kind, lower-cased, plus `s` (true of all eight).
    pub fn resource(self) -> String {
        format!("{}s", self.as_str().to_ascii_lowercase())
    }

    /// Manifests name a kind without a reliable group (peer fixtures even carry
    /// `apiVersion: v1` on Deployments), so offline tools match on the kind alone.
    pub fn from_kind(kind: &str) -> Option<Self> {
        ["", "apps", "batch"]
            .iter()
            .find_map(|group| Self::from_group_kind(group, kind))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pod => "Pod",
            Self::ReplicationController => "ReplicationController",
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
            Self::ReplicaSet => "ReplicaSet",
            Self::Job => "Job",
            Self::CronJob => "CronJob",
        }
    }

    /// Whether it makes pods (and is judged by its pod template) rather than being one.
    pub fn is_controller(self) -> bool {
        self != Self::Pod
    }
}

/// A workload as judged: who it is, and the pod spec it runs (for a controller, its template's).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Workload {
    /// `metadata.name`, or `generateName` for objects whose name the apiserver will pick.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: Annotations,
    /// Kinds named in `ownerReferences`. Anyone can write these, so they may only relax
    /// checks that guard reliability (probes), never security.
    pub owner_kinds: Vec<String>,
    /// `None` when the object has no pod spec at the expected path: such an object cannot be judged.
    pub pod_spec: Option<PodSpec>,
    /// A controller's pod template annotations (a Pod's own are `annotations`).
    pub template_annotations: Option<Annotations>,
    /// Volumes whose source is a type k8s-openapi does not know (a newer Kubernetes): invisible
    /// to the typed spec, so recorded here for the allow-list checks to deny.
    pub unknown_volume_sources: Vec<String>,
}

impl Workload {
    pub fn is_owned_by(&self, kind: WorkloadKind) -> bool {
        self.owner_kinds.iter().any(|owner| owner == kind.as_str())
    }

    /// The annotations the pod will carry: the template's for a controller.
    pub fn pod_annotations(&self) -> &BTreeMap<String, String> {
        self.template_annotations
            .as_ref()
            .unwrap_or(&self.annotations)
            .map()
    }
}

/// An object's or a pod template's annotations. An object's own, read from a review, stay JSON
/// text, checked to be a map of strings, until something asks for them. `kubectl apply` keeps
/// the whole manifest in one escaped annotation
/// (`kubectl.kubernetes.io/last-applied-configuration`) that no check reads; not unescaping it
/// saves 5% of judging a kubectl pod (BENCHMARKS.md, session 22).
#[derive(Clone, Debug, Default)]
pub struct Annotations {
    /// The JSON text of the map (or `null`); empty once typed from another source.
    text: Box<str>,
    typed: OnceLock<BTreeMap<String, String>>,
}

impl Annotations {
    /// From the JSON text of a `metadata.annotations` as serde_json captured it, with the error
    /// a typed read would give when it is not a map of strings.
    fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        if !types_to_string_map(text) {
            let map = serde_json::from_str::<Option<BTreeMap<String, String>>>(text)?;
            return Ok(map.unwrap_or_default().into());
        }
        Ok(Self {
            text: text.into(),
            typed: OnceLock::new(),
        })
    }

    pub fn map(&self) -> &BTreeMap<String, String> {
        // Any text kept was checked to type (`from_json`); an empty one (`Default`) is none.
        self.typed.get_or_init(|| {
            serde_json::from_str::<Option<_>>(&self.text)
                .ok()
                .flatten()
                .unwrap_or_default()
        })
    }
}

impl From<BTreeMap<String, String>> for Annotations {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self {
            text: Box::default(),
            typed: OnceLock::from(map),
        }
    }
}

/// Typed as read, from any serde source (a manifest, a JSON value).
impl<'de> Deserialize<'de> for Annotations {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let map = Option::<BTreeMap<String, String>>::deserialize(de)?;
        Ok(map.unwrap_or_default().into())
    }
}

impl PartialEq for Annotations {
    fn eq(&self, other: &Self) -> bool {
        self.map() == other.map()
    }
}

/// Whether `text`, one whole JSON value that serde_json has checked (as it captured it), types
/// to a map of strings (or to none, `null`) without unescaping or keeping anything. In valid
/// JSON, an object's values are all strings exactly when, outside its strings, it holds nothing
/// but its own braces, colons, commas and whitespace. A `\u` escape anywhere sends the text to
/// typing instead, which refuses half a surrogate pair where skipping a string let it through;
/// kube-apiserver writes `\u` only for control characters, `<`, `>`, `&`, U+2028 and U+2029, so
/// such texts are rare. A serde visitor over the same text cost as much as the envelope's scan
/// of it (BENCHMARKS.md, session 23).
fn types_to_string_map(text: &str) -> bool {
    if text == "null" {
        return true;
    }
    let Some(inner) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) else {
        return false;
    };
    let bytes = inner.as_bytes();
    let mut at = 0;
    loop {
        // Between strings: colons, commas and whitespace only.
        loop {
            match bytes.get(at) {
                None => return true,
                Some(b'"') => break,
                Some(b':' | b',' | b' ' | b'\t' | b'\n' | b'\r') => at += 1,
                Some(_) => return false,
            }
        }
        // A string: to its closing quote, over escapes. Byte by byte: `kubectl apply`'s
        // manifest has an escaped quote every few bytes, too close for `memchr` to pay.
        at += 1;
        loop {
            match bytes.get(at) {
                Some(b'"') => break,
                Some(b'\\') if bytes.get(at + 1) == Some(&b'u') => return false,
                Some(b'\\') => at += 2,
                Some(_) => at += 1,
                None => return false,
            }
        }
        at += 1;
    }
}

/// Dotted path of the pod spec inside an object of `kind`, as a user writes it in a manifest;
/// its segments are the keys decoding and patching walk.
pub fn pod_spec_field(kind: WorkloadKind) -> &'static str {
    match kind {
        WorkloadKind::Pod => "spec",
        WorkloadKind::CronJob => "spec.jobTemplate.spec.template.spec",
        _ => "spec.template.spec",
    }
}

/// Decodes an object of `kind` from any serde source (the raw `object` of a review, a YAML
/// manifest). Only metadata and the pod spec are read; other fields are skipped unparsed, and
/// a pod spec that does not parse is an error, never an absent spec.
pub fn decode<'de, D: serde::Deserializer<'de>>(
    kind: WorkloadKind,
    de: D,
) -> Result<Workload, D::Error> {
    let (meta, template) = match kind {
        WorkloadKind::Pod => {
            let o = shapes::Object::<PodSpec>::deserialize(de)?;
            (o.metadata, shapes::Spec::Pod(o.spec).template())
        }
        WorkloadKind::CronJob => {
            let o = shapes::Object::<shapes::CronJobSpec>::deserialize(de)?;
            (o.metadata, shapes::Spec::CronJob(o.spec).template())
        }
        _ => {
            let o = shapes::Object::<shapes::ControllerSpec>::deserialize(de)?;
            (o.metadata, shapes::Spec::Controller(o.spec).template())
        }
    };
    Ok(assemble(meta, template))
}

/// The JSON texts of the `metadata` fields the checks read, as the review's envelope captured
/// them (each absent when the object has none).
#[derive(Default)]
pub struct MetaTexts<'a> {
    pub name: Option<&'a str>,
    pub generate_name: Option<&'a str>,
    pub labels: Option<&'a str>,
    pub annotations: Option<&'a str>,
    pub owner_references: Option<&'a str>,
}

impl MetaTexts<'_> {
    /// Reads each field as `shapes::Meta` does when it reads a whole `metadata`, with the same
    /// errors; the annotations are checked, and typed when first asked for.
    fn decode(self) -> Result<shapes::Meta, serde_json::Error> {
        fn field<T: serde::de::DeserializeOwned>(
            text: Option<&str>,
        ) -> Result<Option<T>, serde_json::Error> {
            Ok(text.map(serde_json::from_str).transpose()?.flatten())
        }
        Ok(shapes::Meta {
            name: field(self.name)?,
            generate_name: field(self.generate_name)?,
            labels: field(self.labels)?,
            annotations: self
                .annotations
                .map(Annotations::from_json)
                .transpose()?
                .unwrap_or_default(),
            owner_references: field(self.owner_references)?,
        })
    }
}

/// An object's `spec` as the review's envelope read it: its text, or typed on the way.
pub enum SpecIn<'a> {
    Text(&'a str),
    Typed(TypedSpec),
}

/// A spec typed by `SpecSeed` in the envelope's own pass, as its pod template. Boxed: a
/// `PodSpec` is over a kilobyte, and the envelope moves what it reads several times before it
/// is judged.
pub struct TypedSpec(Option<Box<shapes::Template>>);

/// Types an object's `spec` as it passes, for an object of the kind given, sparing the
/// separate scan that captures its text first. It refuses (as an error, so that the caller
/// reads the spec as text instead) a pod spec with a volume of no known source: naming that
/// source takes the spec's JSON, which typing on the way does not keep.
pub struct SpecSeed(pub WorkloadKind);

impl<'de> serde::de::DeserializeSeed<'de> for SpecSeed {
    type Value = TypedSpec;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<TypedSpec, D::Error> {
        let template = spec_of(self.0, de)?.template();
        if template
            .as_ref()
            .and_then(|t| t.spec.as_ref())
            .is_some_and(has_sourceless_volume)
        {
            return Err(serde::de::Error::custom(
                "a volume of no known source, named from the spec's text",
            ));
        }
        Ok(TypedSpec(template.map(Box::new)))
    }
}

/// An object's `spec` by its kind's shape.
fn spec_of<'de, D: serde::Deserializer<'de>>(
    kind: WorkloadKind,
    de: D,
) -> Result<shapes::Spec, D::Error> {
    Ok(match kind {
        WorkloadKind::Pod => shapes::Spec::Pod(Deserialize::deserialize(de)?),
        WorkloadKind::CronJob => shapes::Spec::CronJob(Deserialize::deserialize(de)?),
        _ => shapes::Spec::Controller(Deserialize::deserialize(de)?),
    })
}

/// Decodes an object of `kind` from its `metadata` fields' texts and its `spec` (absent when it
/// has none), as the review's envelope read them: nothing else of the object is read.
pub fn decode_parts(
    kind: WorkloadKind,
    metadata: MetaTexts,
    spec: Option<SpecIn>,
) -> Result<Workload, serde_json::Error> {
    let meta = metadata.decode()?;
    let spec = match spec {
        // `SpecSeed` typed only a spec whose volumes all have a known source.
        Some(SpecIn::Typed(TypedSpec(template))) => {
            return Ok(assemble(meta, template.map(|t| *t)));
        }
        Some(SpecIn::Text(text)) => text,
        None => "null",
    };
    let mut de = serde_json::Deserializer::from_str(spec);
    let template = spec_of(kind, &mut de)?.template();
    de.end()?;
    // The JSON read for unknown volume sources is the object's spec, not the object.
    with_unknown_volume_sources(assemble(meta, template), kind, Within::Spec, || {
        serde_json::from_str(spec).map(Cow::Owned)
    })
}

fn assemble(meta: shapes::Meta, template: Option<shapes::Template>) -> Workload {
    let (template_meta, pod_spec) = template.map_or((None, None), |t| (t.metadata, t.spec));
    Workload {
        name: meta.name.or(meta.generate_name).unwrap_or_default(),
        labels: meta.labels.unwrap_or_default(),
        annotations: meta.annotations,
        owner_kinds: meta
            .owner_references
            .unwrap_or_default()
            .into_iter()
            .map(|o| o.kind)
            .collect(),
        pod_spec,
        template_annotations: template_meta.map(|m| m.annotations),
        unknown_volume_sources: Vec::new(),
    }
}

/// Whether two objects of `kind` carry the same pod spec text (and one at all), given the
/// texts of their `spec`s. Equal text is an equal spec; unequal text may still be an equal
/// spec, which decoding then tells.
pub fn same_pod_spec_text(kind: WorkloadKind, new_spec: &str, old_spec: &str) -> bool {
    match (raw_pod_spec(kind, new_spec), raw_pod_spec(kind, old_spec)) {
        (Some(new), Some(old)) => new == old && new != "null",
        _ => false,
    }
}

/// The text of an object's `spec`, found without decoding anything else.
pub fn object_spec_text(object: &str) -> Option<&str> {
    #[derive(serde::Deserialize)]
    struct Spec<'a> {
        #[serde(borrow, default)]
        spec: Option<&'a serde_json::value::RawValue>,
    }
    Some(serde_json::from_str::<Spec>(object).ok()?.spec?.get())
}

/// The pod spec's JSON text inside an object's `spec` text, found without decoding anything
/// else: one pass over each level on the way (`template`, `jobTemplate`), with no map built.
/// A Pod's is its spec.
fn raw_pod_spec(kind: WorkloadKind, spec: &str) -> Option<&str> {
    use serde_json::value::RawValue;
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Level<'a> {
        #[serde(borrow, default)]
        spec: Option<&'a RawValue>,
        #[serde(borrow, default)]
        template: Option<&'a RawValue>,
        #[serde(borrow, default)]
        job_template: Option<&'a RawValue>,
    }
    let mut text = spec;
    for key in pod_spec_field(kind).split('.').skip(1) {
        let level: Level = serde_json::from_str(text).ok()?;
        text = match key {
            "spec" => level.spec,
            "template" => level.template,
            _ => level.job_template,
        }?
        .get();
    }
    Some(text)
}

/// Decodes an object already parsed into a JSON value (a manifest, a listed object, a
/// review's object kept for CEL rules).
pub fn decode_value(
    kind: WorkloadKind,
    object: &serde_json::Value,
) -> Result<Workload, serde_json::Error> {
    with_unknown_volume_sources(decode(kind, object)?, kind, Within::Object, || {
        Ok(Cow::Borrowed(object))
    })
}

/// Decodes an object from its JSON text (the raw `object` of a review).
pub fn decode_json(kind: WorkloadKind, json: &str) -> Result<Workload, serde_json::Error> {
    let workload = decode(kind, &mut serde_json::Deserializer::from_str(json))?;
    with_unknown_volume_sources(workload, kind, Within::Object, || {
        serde_json::from_str(json).map(Cow::Owned)
    })
}

/// The apiserver defaults a volume without a source to emptyDir before admission, so a
/// volume that reaches us with no known source either is such a manifest or carries a source
/// type newer than k8s-openapi. Only then is the object read a second time, to tell which.
fn has_sourceless_volume(spec: &PodSpec) -> bool {
    spec.volumes.iter().flatten().any(|v| !has_known_source(v))
}

/// What the JSON read for unknown volume sources holds: a whole object, or its `spec`.
#[derive(Clone, Copy)]
enum Within {
    Object,
    Spec,
}

/// `w`, with the sources of its sourceless volumes named from the JSON (`json`, read only
/// then) of a `kind` object or of its spec.
fn with_unknown_volume_sources<'a>(
    mut w: Workload,
    kind: WorkloadKind,
    within: Within,
    json: impl FnOnce() -> Result<Cow<'a, serde_json::Value>, serde_json::Error>,
) -> Result<Workload, serde_json::Error> {
    if w.pod_spec.as_ref().is_some_and(has_sourceless_volume) {
        // The pod spec's JSON pointer (`/spec/template/spec`), made only on this rare path.
        let pointer = format!("/{}", pod_spec_field(kind).replace('.', "/"));
        let pointer = match within {
            Within::Object => &pointer,
            Within::Spec => pointer.strip_prefix("/spec").unwrap_or_default(),
        };
        note_unknown_volume_sources(&*json()?, pointer, &mut w);
    }
    Ok(w)
}

fn note_unknown_volume_sources(json: &serde_json::Value, pointer: &str, w: &mut Workload) {
    let volumes = json.pointer(&format!("{pointer}/volumes"));
    let Some(volumes) = volumes.and_then(|v| v.as_array()) else {
        return;
    };
    for volume in volumes.iter().filter_map(|v| v.as_object()) {
        if let Some(source) = volume.keys().find(|k| *k != "name") {
            let name = volume.get("name").and_then(|n| n.as_str()).unwrap_or("");
            if w.pod_spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .any(|v| v.name == name && !has_known_source(v))
            {
                w.unknown_volume_sources.push(format!("{name}:{source}"));
            }
        }
    }
}

/// Whether any volume source known to k8s-openapi is set: checked field by field, since it
/// runs for every volume of every decoded pod.
pub fn has_known_source(v: &k8s_openapi::api::core::v1::Volume) -> bool {
    v.aws_elastic_block_store.is_some()
        || v.azure_disk.is_some()
        || v.azure_file.is_some()
        || v.cephfs.is_some()
        || v.cinder.is_some()
        || v.config_map.is_some()
        || v.csi.is_some()
        || v.downward_api.is_some()
        || v.empty_dir.is_some()
        || v.ephemeral.is_some()
        || v.fc.is_some()
        || v.flex_volume.is_some()
        || v.flocker.is_some()
        || v.gce_persistent_disk.is_some()
        || v.git_repo.is_some()
        || v.glusterfs.is_some()
        || v.host_path.is_some()
        || v.image.is_some()
        || v.iscsi.is_some()
        || v.nfs.is_some()
        || v.persistent_volume_claim.is_some()
        || v.photon_persistent_disk.is_some()
        || v.portworx_volume.is_some()
        || v.projected.is_some()
        || v.quobyte.is_some()
        || v.rbd.is_some()
        || v.scale_io.is_some()
        || v.secret.is_some()
        || v.storageos.is_some()
        || v.vsphere_volume.is_some()
}

/// The few shapes between an object's root and its pod spec. Everything else in the object
/// (status, managedFields, replicas, ...) is ignored without being built.
mod shapes {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::PodSpec;
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Object<S> {
        #[serde(default)]
        pub metadata: Meta,
        #[serde(default = "none")]
        pub spec: Option<S>,
    }

    fn none<S>() -> Option<S> {
        None
    }

    #[derive(Default, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Meta {
        #[serde(default)]
        pub name: Option<String>,
        #[serde(default)]
        pub generate_name: Option<String>,
        #[serde(default)]
        pub labels: Option<BTreeMap<String, String>>,
        #[serde(default)]
        pub annotations: super::Annotations,
        #[serde(default)]
        pub owner_references: Option<Vec<OwnerReference>>,
    }

    #[derive(Deserialize)]
    pub struct OwnerReference {
        pub kind: String,
    }

    /// An object's spec by the kind's shape, before its pod template is taken out.
    pub enum Spec {
        Pod(Option<PodSpec>),
        CronJob(Option<CronJobSpec>),
        Controller(Option<ControllerSpec>),
    }

    impl Spec {
        pub fn template(self) -> Option<Template> {
            match self {
                Spec::Pod(spec) => Some(Template {
                    metadata: None,
                    spec,
                }),
                Spec::CronJob(spec) => spec.and_then(|s| s.job_template?.spec?.template),
                Spec::Controller(spec) => spec.and_then(|s| s.template),
            }
        }
    }

    #[derive(Deserialize)]
    pub struct ControllerSpec {
        #[serde(default)]
        pub template: Option<Template>,
    }

    #[derive(Deserialize)]
    pub struct Template {
        #[serde(default)]
        pub metadata: Option<TemplateMeta>,
        #[serde(default)]
        pub spec: Option<PodSpec>,
    }

    #[derive(Deserialize)]
    pub struct TemplateMeta {
        #[serde(default)]
        pub annotations: super::Annotations,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct CronJobSpec {
        #[serde(default)]
        pub job_template: Option<JobTemplate>,
    }

    #[derive(Deserialize)]
    pub struct JobTemplate {
        #[serde(default)]
        pub spec: Option<ControllerSpec>,
    }
}

/// Which of a pod's three container lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ContainerKind {
    Containers,
    InitContainers,
    EphemeralContainers,
}

impl ContainerKind {
    pub fn field(self) -> &'static str {
        match self {
            Self::Containers => "containers",
            Self::InitContainers => "initContainers",
            Self::EphemeralContainers => "ephemeralContainers",
        }
    }

    pub fn noun(self) -> &'static str {
        match self {
            Self::Containers => "container",
            Self::InitContainers => "init container",
            Self::EphemeralContainers => "ephemeral container",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the byte check says of valid JSON texts, and that what it passes types.
    #[test]
    fn the_string_map_check_passes_only_what_types() {
        let cases = [
            ("null", true),
            ("{}", true),
            (r#"{"a":"b"}"#, true),
            (
                r#"{ "a" : "b" ,
               "c":"d" }"#,
                true,
            ),
            (r#"{"a":"x\"y\\z"}"#, true),
            (r#"{"a":"}{[1]:,null"}"#, true),
            (r#"{"a":"b\\u"}"#, true),
            (r#"{"a":1}"#, false),
            (r#"{"a":-1}"#, false),
            (r#"{"a":null}"#, false),
            (r#"{"a":true}"#, false),
            (r#"{"a":{"b":"c"}}"#, false),
            (r#"{"a":["b"]}"#, false),
            (r#"{"a":"b","c":[]}"#, false),
            (r#"["a"]"#, false),
            (r#""a""#, false),
            ("7", false),
            // Sent to typing, which decides: this one types, the next two do not.
            (r#"{"a":"\u0041"}"#, false),
            (r#"{"a":"\ud800"}"#, false),
            (r#"{"\ud800":"a"}"#, false),
        ];
        for (text, plain) in cases {
            assert_eq!(types_to_string_map(text), plain, "{text}");
            if plain {
                serde_json::from_str::<Option<BTreeMap<String, String>>>(text)
                    .unwrap_or_else(|e| panic!("{text}: {e}"));
            }
        }
    }
}
