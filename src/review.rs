//! The wire format, and the only module that knows AdmissionReview JSON. `decode` turns a
//! request body into a `Request` (or says why it is not a v1 review: HTTP 400); `encode_*`
//! turn a `Verdict` or patch operations back into the `admission.k8s.io/v1` response.
//!
//! Decoding uses the ecosystem's field types (kube's `Operation` and `GroupVersionKind`,
//! k8s-openapi's `UserInfo` and `PodSpec`) inside a thin envelope of our own, rather than
//! kube's `AdmissionReview<DynamicObject>`: that type flattens twice, which makes serde buffer
//! the whole review before reading it, and its response serializes `patch` as an array of
//! numbers where the apiserver requires a base64 string (kube-rs issue 1781). The objects are
//! taken as raw JSON in the envelope's one pass (the texts of the `metadata` fields the checks
//! read and of the `spec`, or whole when CEL rules read them), and decoded only when their kind
//! is judged; a new object's spec is typed in that pass when the request's kind and operation
//! come first, as the apiserver writes them. Tests pin every response field and cross-check
//! decoding against kube's own type on the captured reviews.

use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::gvk::GroupVersionKind;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::cel::ObjectReads;
use crate::defaults::JsonPatch;
use crate::json_string::{self, Escaped};
use crate::request::{Decoded, LazyJson, Operation, Request, RequestJson};
use crate::verdict::{Encoding, Verdict};
use crate::workload::{self, SpecIn, Workload, WorkloadKind};

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// Why a body is not a review portcullis can answer. Each becomes an HTTP 400 with this text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReviewError {
    #[error("body is not a JSON AdmissionReview: {0}")]
    Json(String),
    #[error("apiVersion is {0:?}; portcullis answers admission.k8s.io/v1 reviews only")]
    ApiVersion(String),
    #[error("kind is {0:?}, not AdmissionReview")]
    Kind(String),
    #[error("the review has no request")]
    NoRequest,
    #[error("request.uid is empty")]
    EmptyUid,
}

/// `O`: how the objects are read (`Parts`, or whole as `&RawValue` for CEL rules). `TYPED`:
/// whether the new object's spec is typed as it passes, where the request allows it
/// (`RequestVisitor`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "O: ObjectIn<'de>"))]
struct Envelope<O, const TYPED: bool> {
    api_version: String,
    kind: String,
    #[serde(default)]
    request: Option<RequestAs<O, TYPED>>,
}

struct RequestIn<O> {
    uid: String,
    kind: GroupVersionKind,
    sub_resource: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
    operation: Operation,
    resource: Option<ResourceIn>,
    user_info: Option<UserInfo>,
    object: Option<O>,
    old_object: Option<O>,
    dry_run: Option<bool>,
}

impl<O> Names for RequestIn<O> {
    const NAMES: &'static [&'static str] = &[
        "uid",
        "kind",
        "subResource",
        "name",
        "namespace",
        "operation",
        "resource",
        "userInfo",
        "object",
        "oldObject",
        "dryRun",
    ];

    fn field(name: &str) -> Option<usize> {
        Some(match name {
            "uid" => 0,
            "kind" => 1,
            "subResource" => 2,
            "name" => 3,
            "namespace" => 4,
            "operation" => 5,
            "resource" => 6,
            "userInfo" => 7,
            "object" => 8,
            "oldObject" => 9,
            "dryRun" => 10,
            _ => return None,
        })
    }
}

/// A request read with `TYPED` as `Envelope` says.
struct RequestAs<O, const TYPED: bool>(RequestIn<O>);

impl<'de, O: ObjectIn<'de>, const TYPED: bool> Deserialize<'de> for RequestAs<O, TYPED> {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_map(RequestVisitor::<O, TYPED>(std::marker::PhantomData))
    }
}

/// Reads a request as serde's derive reads a struct (unknown fields skipped, `null` as absent
/// for the optional ones, a field given twice or a required one missing an error), written out
/// so that `object` is read knowing the request's kind and operation. The apiserver sends both
/// before it, and so `TYPED` can type a new object's spec as it passes: a kubectl-made pod's
/// spec is 40% of its review, and capturing its text to type it afterwards scanned it twice.
/// An UPDATE's spec stays text, to be compared with the old one's before either is typed.
struct RequestVisitor<O, const TYPED: bool>(std::marker::PhantomData<O>);

impl<'de, O: ObjectIn<'de>, const TYPED: bool> serde::de::Visitor<'de>
    for RequestVisitor<O, TYPED>
{
    type Value = RequestAs<O, TYPED>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an AdmissionRequest")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error as _;
        let (mut uid, mut kind, mut sub_resource, mut name, mut namespace) =
            (None, None, None, None, None);
        let (mut operation, mut resource, mut user_info) = (None, None, None);
        let (mut object, mut old_object, mut dry_run) = (None, None, None);
        while let Some(field) = map.next_key_seed(Key::<RequestIn<O>>(std::marker::PhantomData))? {
            let fresh = match field {
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    true
                }
                Some(0) => fill(&mut uid, map.next_value()?),
                Some(1) => fill(&mut kind, map.next_value::<GroupVersionKind>()?),
                Some(2) => fill(&mut sub_resource, map.next_value()?),
                Some(3) => fill(&mut name, map.next_value()?),
                Some(4) => fill(&mut namespace, map.next_value()?),
                Some(5) => fill(&mut operation, map.next_value::<Operation>()?),
                Some(6) => fill(&mut resource, map.next_value()?),
                Some(7) => fill(&mut user_info, map.next_value()?),
                Some(8) => {
                    let typed = match (&kind, &operation) {
                        (Some(kind), Some(operation))
                            if TYPED && *operation != Operation::Update =>
                        {
                            WorkloadKind::from_group_kind(&kind.group, &kind.kind)
                                .and_then(O::typed)
                        }
                        _ => None,
                    };
                    let value = match typed {
                        Some(seed) => map.next_value_seed(Nullable(seed))?,
                        None => map.next_value()?,
                    };
                    fill(&mut object, value)
                }
                Some(9) => fill(&mut old_object, map.next_value()?),
                Some(_) => fill(&mut dry_run, map.next_value()?),
            };
            if !fresh {
                let name = RequestIn::<O>::NAMES[field.unwrap_or_default()];
                return Err(A::Error::duplicate_field(name));
            }
        }
        Ok(RequestAs(RequestIn {
            uid: uid.ok_or_else(|| A::Error::missing_field("uid"))?,
            kind: kind.ok_or_else(|| A::Error::missing_field("kind"))?,
            sub_resource: sub_resource.flatten(),
            name: name.flatten(),
            namespace: namespace.flatten(),
            operation: operation.ok_or_else(|| A::Error::missing_field("operation"))?,
            resource: resource.flatten(),
            user_info: user_info.flatten(),
            object: object.flatten(),
            old_object: old_object.flatten(),
            dry_run: dry_run.flatten(),
        }))
    }
}

/// How a request's `object` is read; `typed` gives the seed that reads an object of a judged
/// kind with its spec typed on the way, where there is one.
trait ObjectIn<'de>: Deserialize<'de> {
    type Seed: serde::de::DeserializeSeed<'de, Value = Self>;
    fn typed(kind: WorkloadKind) -> Option<Self::Seed>;
}

impl<'de> ObjectIn<'de> for &'de RawValue {
    type Seed = std::marker::PhantomData<Self>;

    /// CEL rules read the object whole.
    fn typed(_: WorkloadKind) -> Option<Self::Seed> {
        None
    }
}

impl<'de> ObjectIn<'de> for Parts<'de> {
    type Seed = CapturedVisitor<ObjectParts<'de>>;

    fn typed(kind: WorkloadKind) -> Option<Self::Seed> {
        Some(CapturedVisitor(ObjectParts {
            typed: Some(kind),
            ..ObjectParts::default()
        }))
    }
}

/// `S`'s value, or none for null, as `Option` reads its value.
struct Nullable<S>(S);

impl<'de, S: serde::de::DeserializeSeed<'de>> serde::de::DeserializeSeed<'de> for Nullable<S> {
    type Value = Option<S::Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_option(self)
    }
}

impl<'de, S: serde::de::DeserializeSeed<'de>> serde::de::Visitor<'de> for Nullable<S> {
    type Value = Option<S::Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a value or null")
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(de).map(Some)
    }
}

/// An object as the envelope reads it for the built-in checks and defaults, in its one pass
/// over the body: the texts of the `metadata` fields the checks read, and the `spec`, typed as
/// it passes when the request allows (`RequestVisitor`) or else as text, there to compare
/// with the old object's without another scan. The rest (`status`, `managedFields`: most of
/// what the apiserver sends) is skipped once. Anything but a JSON object is kept as the reason
/// it cannot be read, to be denied if the object is judged.
type Parts<'a> = Captured<ObjectParts<'a>>;

#[derive(Default)]
struct ObjectParts<'a> {
    /// Read field by field rather than captured whole: typing a captured `metadata` scanned its
    /// `managedFields` a second time, 13% of the instructions decoding a kubectl-made pod took.
    metadata: Option<Captured<workload::MetaTexts<'a>>>,
    spec: Option<SpecIn<'a>>,
    /// The kind to type the spec as on the way, if any; else its text is taken.
    typed: Option<WorkloadKind>,
}

/// An object read by `CapturedVisitor`, or why it cannot be.
enum Captured<T> {
    Object(T),
    Unreadable(String),
}

/// An object's field names.
trait Names {
    /// Each field's name, by the position `field` gives it.
    const NAMES: &'static [&'static str];
    /// The position of a field's name in `NAMES` (a `match`, which is faster than a search).
    fn field(name: &str) -> Option<usize>;
}

/// An object whose named fields are taken as they pass, the others skipped.
trait Fields<'de>: Names + Default {
    /// What the object is, for the reason a value of another type is unreadable.
    const EXPECTING: &'static str;
    /// Reads the value of `NAMES[field]`: false when that field was read before.
    fn read<A: serde::de::MapAccess<'de>>(
        &mut self,
        field: usize,
        map: &mut A,
    ) -> Result<bool, A::Error>;
}

/// Stores `value` in an empty `slot`; false when it was filled.
fn fill<T>(slot: &mut Option<T>, value: T) -> bool {
    slot.replace(value).is_none()
}

impl Names for ObjectParts<'_> {
    const NAMES: &'static [&'static str] = &["metadata", "spec"];

    fn field(name: &str) -> Option<usize> {
        match name {
            "metadata" => Some(0),
            "spec" => Some(1),
            _ => None,
        }
    }
}

impl<'de> Fields<'de> for ObjectParts<'de> {
    const EXPECTING: &'static str = "a Kubernetes object";

    fn read<A: serde::de::MapAccess<'de>>(
        &mut self,
        field: usize,
        map: &mut A,
    ) -> Result<bool, A::Error> {
        Ok(match field {
            0 => fill(&mut self.metadata, map.next_value()?),
            _ => {
                let spec = match self.typed {
                    Some(kind) => SpecIn::Typed(map.next_value_seed(workload::SpecSeed(kind))?),
                    None => SpecIn::Text(map.next_value::<&RawValue>()?.get()),
                };
                fill(&mut self.spec, spec)
            }
        })
    }
}

impl Names for workload::MetaTexts<'_> {
    const NAMES: &'static [&'static str] = &[
        "name",
        "generateName",
        "labels",
        "annotations",
        "ownerReferences",
    ];

    fn field(name: &str) -> Option<usize> {
        match name {
            "name" => Some(0),
            "generateName" => Some(1),
            "labels" => Some(2),
            "annotations" => Some(3),
            "ownerReferences" => Some(4),
            _ => None,
        }
    }
}

impl<'de> Fields<'de> for workload::MetaTexts<'de> {
    const EXPECTING: &'static str = "an object's metadata";

    fn read<A: serde::de::MapAccess<'de>>(
        &mut self,
        field: usize,
        map: &mut A,
    ) -> Result<bool, A::Error> {
        let text = map.next_value::<&RawValue>()?.get();
        Ok(fill(
            match field {
                0 => &mut self.name,
                1 => &mut self.generate_name,
                2 => &mut self.labels,
                3 => &mut self.annotations,
                _ => &mut self.owner_references,
            },
            text,
        ))
    }
}

impl<'de, T: Fields<'de>> Deserialize<'de> for Captured<T> {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        serde::de::DeserializeSeed::deserialize(CapturedVisitor(T::default()), de)
    }
}

/// Reads a `Captured<T>` into `T` as it starts out.
struct CapturedVisitor<T>(T);

impl<'de, T: Fields<'de>> serde::de::DeserializeSeed<'de> for CapturedVisitor<T> {
    type Value = Captured<T>;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<T> CapturedVisitor<T> {
    fn not<'de, E>(what: serde::de::Unexpected) -> Result<Captured<T>, E>
    where
        T: Fields<'de>,
    {
        Ok(Captured::Unreadable(format!(
            "invalid type: {what}, expected {}",
            T::EXPECTING
        )))
    }
}

/// A key as the position of its field, unescaped as a typed decode compares it.
struct Key<T>(std::marker::PhantomData<T>);

impl<'de, T: Names> serde::de::DeserializeSeed<'de> for Key<T> {
    type Value = Option<usize>;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_identifier(self)
    }
}

impl<'de, T: Names> serde::de::Visitor<'de> for Key<T> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(T::field(v))
    }
}

impl<'de, T: Fields<'de>> serde::de::Visitor<'de> for CapturedVisitor<T> {
    type Value = Captured<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = self.0;
        while let Some(field) = map.next_key_seed(Key::<T>(std::marker::PhantomData))? {
            let Some(field) = field else {
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            };
            // As a typed decode would: a field given twice is no object we can read.
            if !object.read(field, &mut map)? {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                let name = T::NAMES[field];
                return Ok(Captured::Unreadable(format!("duplicate field `{name}`")));
            }
        }
        Ok(Captured::Object(object))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Self::not(serde::de::Unexpected::Seq)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Self::not(serde::de::Unexpected::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Self::not(serde::de::Unexpected::Signed(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Self::not(serde::de::Unexpected::Unsigned(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Self::not(serde::de::Unexpected::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Self::not(serde::de::Unexpected::Str(v))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Self::not(serde::de::Unexpected::Unit)
    }
}

#[derive(Deserialize, Default)]
struct ResourceIn {
    #[serde(default)]
    group: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    resource: String,
}

/// What a review is read for, which decides how much of it is decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    /// The object typed, and the old one unless its pod spec text is the object's.
    Full,
    /// For the built-in checks alone: as `Full`, except that an UPDATE whose pod spec text is
    /// unchanged leaves the new object undecoded too, since validation skips it.
    Checks,
    /// For CEL rules too: as `Full`, with the objects kept as JSON for expressions, which
    /// judge every UPDATE; the new object without the parts no expression reads.
    Cel(ObjectReads),
}

/// Reads a request body. Any error here means the body is not a v1 AdmissionReview at all;
/// an object that cannot be read is not an error but `Decoded::Unreadable`, to be denied.
pub fn decode(body: &[u8]) -> Result<Request, ReviewError> {
    decode_with(body, Reading::Full)
}

/// `decode`, reading as much as `reading` needs.
pub fn decode_with(body: &[u8], reading: Reading) -> Result<Request, ReviewError> {
    if let Reading::Cel(reads) = reading {
        return decode_whole(body, reads);
    }
    // A review read with the spec typed on the way is read again with it captured as text
    // when that fails for any reason: a spec that cannot be typed is then denied with its
    // reason as before, rather than refused as a body, and a body that is no review gets the
    // same answer as before.
    let mut r: RequestIn<Parts> = match request_in::<Parts, true>(body) {
        Ok(r) => r,
        Err(_) => request_in::<Parts, false>(body)?,
    };
    let judged = WorkloadKind::from_group_kind(&r.kind.group, &r.kind.kind);
    fn spec_text<'a>(parts: &Option<Parts<'a>>) -> Option<&'a str> {
        match parts {
            Some(Parts::Object(ObjectParts {
                spec: Some(SpecIn::Text(text)),
                ..
            })) => Some(text),
            _ => None,
        }
    }
    // The old object only matters to tell whether an UPDATE changed the pod spec: when its
    // spec's text is the object's, that is told without decoding it.
    let unchanged = match (
        &r.operation,
        judged,
        spec_text(&r.object),
        spec_text(&r.old_object),
    ) {
        (Operation::Update, Some(kind), Some(new), Some(old)) => {
            workload::same_pod_spec_text(kind, new, old)
        }
        _ => false,
    };
    let old_object = match r.operation {
        Operation::Update if unchanged => Decoded::SameSpec,
        Operation::Update => decoded(judged, r.old_object.take(), read_parts),
        _ => Decoded::Skipped,
    };
    let object = match judged {
        Some(_) if unchanged && reading == Reading::Checks => Decoded::SameSpec,
        _ => decoded(judged, r.object.take(), read_parts),
    };
    Ok(request(r, judged, object, old_object, None))
}

/// For CEL rules: the new object as JSON for expressions, the old one whole, to be read as
/// JSON only if an expression does.
fn decode_whole(body: &[u8], reads: ObjectReads) -> Result<Request, ReviewError> {
    let mut r: RequestIn<&RawValue> = request_in::<_, false>(body)?;
    let judged = WorkloadKind::from_group_kind(&r.kind.group, &r.kind.kind);
    let resource = r.resource.take().unwrap_or_default();
    let update = r.operation == Operation::Update;
    // An object serde_json cannot build (nested beyond its limit) is null to expressions and
    // read typed from its text, which skips what it does not read.
    let parsed = r.object.and_then(|raw| {
        let mut de = serde_json::Deserializer::from_str(raw.get());
        let tree = Tree {
            reads,
            top: true,
            spec_text: update,
        };
        let object = serde::de::DeserializeSeed::deserialize(tree, &mut de).ok()?;
        de.end().ok().map(|()| object)
    });
    let unchanged = match (judged, r.object, r.old_object) {
        (Some(kind), Some(new), Some(old)) if update => {
            let new = match &parsed {
                Some(object) => object.spec.map(RawValue::get),
                None => workload::object_spec_text(new.get()),
            };
            new.zip(workload::object_spec_text(old.get()))
                .is_some_and(|(new, old)| workload::same_pod_spec_text(kind, new, old))
        }
        _ => false,
    };
    let old_object = match r.operation {
        Operation::Update if unchanged => Decoded::SameSpec,
        Operation::Update => decoded(judged, r.old_object, read_whole),
        _ => Decoded::Skipped,
    };
    let object = parsed.map(|o| o.json);
    // The typed object is read from the JSON expressions read, when there is one.
    let typed = match (judged, &object) {
        (Some(kind), Some(json)) => Decoded::from_result(kind, workload::decode_value(kind, json)),
        _ => decoded(judged, r.object, read_whole),
    };
    let json = Box::new(RequestJson {
        group: resource.group,
        version: resource.version,
        resource: resource.resource,
        object,
        old_object: r.old_object.map(|raw| LazyJson::new(raw.get().to_owned())),
        user_info: r.user_info.take(),
    });
    Ok(request(r, judged, typed, old_object, Some(json)))
}

/// The new object as CEL rules read it: its JSON, without `status` and
/// `metadata.managedFields` when no loaded expression reads them (`cel::ObjectReads`;
/// `managedFields` is most of an object the apiserver sends, and cost more to build than
/// several rules took), and for an UPDATE its `spec`'s text, captured in the same pass to
/// compare the two specs without another scan. Leaving out is all this changes: anything else
/// reads as serde_json reads it.
struct CelObject<'a> {
    json: serde_json::Value,
    /// None when not asked for, when there is none, or when there is more than one.
    spec: Option<&'a RawValue>,
}

impl CelObject<'_> {
    /// A value that is no JSON object: kept as it is, to be found unreadable.
    fn other(json: serde_json::Value) -> Self {
        Self { json, spec: None }
    }
}

/// Builds a `CelObject` (`top`) or its metadata, as serde_json builds a `Value` but for the
/// keys `reads` lets it leave out; `spec_text` captures the spec's text too.
#[derive(Clone, Copy)]
struct Tree {
    reads: ObjectReads,
    top: bool,
    spec_text: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for Tree {
    type Value = CelObject<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Tree {
    type Value = CelObject<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let ObjectReads {
            status,
            managed_fields,
        } = self.reads;
        let mut out = serde_json::Map::new();
        let mut spec = None;
        let mut specs = 0;
        while let Some(key) = map.next_key::<String>()? {
            let value = match (self.top, key.as_str()) {
                (true, "status") if !status => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    continue;
                }
                (false, "managedFields") if !managed_fields => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    continue;
                }
                (true, "metadata") if !managed_fields => {
                    let metadata = Tree { top: false, ..self };
                    map.next_value_seed(metadata)?.json
                }
                (true, "spec") if self.spec_text => {
                    let raw: &RawValue = map.next_value()?;
                    specs += 1;
                    spec = Some(raw);
                    serde_json::from_str(raw.get()).map_err(serde::de::Error::custom)?
                }
                _ => map.next_value()?,
            };
            out.insert(key, value);
        }
        Ok(CelObject {
            json: serde_json::Value::Object(out),
            spec: spec.filter(|_| specs == 1),
        })
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let json = Deserialize::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
        Ok(CelObject::other(json))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(CelObject::other(v.into()))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(CelObject::other(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(CelObject::other(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(CelObject::other(v.into()))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(CelObject::other(v.into()))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(CelObject::other(serde_json::Value::Null))
    }
}

/// The review's request, once the envelope says it is a v1 AdmissionReview with a uid.
fn request_in<'a, O: ObjectIn<'a>, const TYPED: bool>(
    body: &'a [u8],
) -> Result<RequestIn<O>, ReviewError> {
    // JSON is UTF-8 (RFC 8259). Checked once over the whole body, at the standard library's
    // word-at-a-time pace, rather than string by string as serde_json checks a byte slice:
    // each string and each captured raw text was validated on its own (6k of the 130k
    // instructions a captured pod review took to decode).
    let text =
        std::str::from_utf8(body).map_err(|e| ReviewError::Json(format!("not UTF-8: {e}")))?;
    let envelope: Envelope<O, TYPED> =
        serde_json::from_str(text).map_err(|e| ReviewError::Json(e.to_string()))?;
    if envelope.api_version != API_VERSION {
        return Err(ReviewError::ApiVersion(envelope.api_version));
    }
    if envelope.kind != KIND {
        return Err(ReviewError::Kind(envelope.kind));
    }
    let RequestAs(r) = envelope.request.ok_or(ReviewError::NoRequest)?;
    if r.uid.is_empty() {
        return Err(ReviewError::EmptyUid);
    }
    Ok(r)
}

fn request<O>(
    r: RequestIn<O>,
    judged: Option<WorkloadKind>,
    object: Decoded,
    old_object: Decoded,
    json: Option<Box<RequestJson>>,
) -> Request {
    // For CEL rules the user has moved into `json`.
    let user = r
        .user_info
        .as_ref()
        .or(json.as_ref().and_then(|j| j.user_info.as_ref()))
        .and_then(|u| u.username.clone());
    Request {
        uid: r.uid,
        operation: r.operation,
        kind: r.kind.kind,
        workload: judged,
        sub_resource: r.sub_resource.filter(|s| !s.is_empty()),
        namespace: r.namespace.unwrap_or_default(),
        name: r.name.unwrap_or_default(),
        user: user.unwrap_or_default(),
        dry_run: r.dry_run.unwrap_or(false),
        object,
        old_object,
        json,
    }
}

/// What became of an object: absent, skipped (a kind portcullis does not judge), or `read`.
fn decoded<T>(
    kind: Option<WorkloadKind>,
    object: Option<T>,
    read: fn(WorkloadKind, T) -> Result<Workload, serde_json::Error>,
) -> Decoded {
    match (kind, object) {
        (_, None) => Decoded::Absent,
        (None, Some(_)) => Decoded::Skipped,
        (Some(kind), Some(object)) => Decoded::from_result(kind, read(kind, object)),
    }
}

fn read_parts(kind: WorkloadKind, parts: Parts) -> Result<Workload, serde_json::Error> {
    let unreadable = |reason| Err(serde::de::Error::custom(reason));
    match parts {
        Parts::Object(ObjectParts { metadata, spec, .. }) => {
            let metadata = match metadata {
                Some(Captured::Object(texts)) => texts,
                Some(Captured::Unreadable(reason)) => return unreadable(reason),
                None => workload::MetaTexts::default(),
            };
            workload::decode_parts(kind, metadata, spec)
        }
        Parts::Unreadable(reason) => unreadable(reason),
    }
}

fn read_whole(kind: WorkloadKind, raw: &RawValue) -> Result<Workload, serde_json::Error> {
    workload::decode_json(kind, raw.get())
}

/// Room for a fix's path in a denial message, `spec.template.spec.initContainers[12]` and
/// more: the answer is sized before the paths are spelt out.
const FIX_PATH_BYTES: usize = 48;

/// The `/validate` answer. It never carries a patch: the apiserver fails a validating webhook
/// that returns one.
pub fn encode_validation(req: &Request, verdict: &Verdict) -> Vec<u8> {
    let texts = verdict.texts(JsonText);
    // Each text goes into the message and an audit annotation; each fix, indented, into the
    // message: sized so the answer is written without regrowing.
    let text_bytes = texts.byte_len();
    let fix_bytes: usize = verdict
        .denials()
        .filter_map(|v| v.add.as_ref())
        .map(|fix| FIX_PATH_BYTES + 2 * fix.yaml.len() + 24)
        .sum();
    let mut out = Json::head(&req.uid, verdict.is_allowed(), 2 * text_bytes + fix_bytes);
    match verdict {
        Verdict::Unjudgeable(reason) => {
            out.status(400, "BadRequest", |m| {
                let mut m = Escaped(m);
                m.push_str("portcullis cannot judge this ");
                m.push_str(&req.kind);
                m.push_str(": ");
                m.push_str(reason);
            });
        }
        _ if verdict.denials().next().is_some() => {
            out.status(403, "Forbidden", |m| {
                verdict.write_denial_message(&req.kind, subject_name(req), &texts, m);
            });
        }
        _ => {}
    }
    out.field(
        ",\"auditAnnotations\":{",
        verdict.audit_annotations(&texts).iter(),
        "}",
        |out, annotation| {
            out.string(annotation.key());
            // The value is escaped already.
            out.raw(":\"");
            annotation.write_value(&mut out.0);
            out.raw("\"");
        },
    );
    out.field(",\"warnings\":[", verdict.warnings(), "]", |out, w| {
        out.string(&w)
    });
    out.finish()
}

/// The `/mutate` answer: always allowed, with a patch only when there is something to change.
pub fn encode_mutation(req: &Request, patch: &JsonPatch) -> Vec<u8> {
    if patch.is_empty() {
        return Json::head(&req.uid, true, 0).finish();
    }
    let json = patch.as_json();
    // Sized for the base64 of the patch: the answer is written without regrowing.
    let mut out = Json::head(&req.uid, true, json.len().div_ceil(3) * 4 + 64);
    // Base64 of the RFC 6902 JSON array: the JSON form of Go's `[]byte`.
    out.raw(",\"patch\":\"");
    base64_simd::STANDARD.encode_append(json, &mut out.0);
    out.raw("\",\"patchType\":\"JSONPatch\"");
    out.finish()
}

/// The answer's texts are JSON string contents.
struct JsonText;

impl Encoding for JsonText {
    fn encode(&self, out: &mut String, text: &str) {
        Escaped(out).push_str(text);
    }

    fn encode_indented(&self, out: &mut String, text: &str, indent: &str) {
        Escaped(out).push_indented(text, indent);
    }

    fn encode_static_indented(&self, out: &mut String, text: &'static str, indent: &'static str) {
        Escaped(out).push_static_indented(text, indent);
    }
}

/// `admission.k8s.io/v1` AdmissionReview with its AdmissionResponse, written straight into
/// one buffer, field for field as the apiserver reads them (`uid`, `allowed`, `status`,
/// `patch`, `patchType`, `auditAnnotations`, `warnings`; empty ones left out): a denial's
/// text is escaped once, where it is written, with no intermediate value tree or string.
/// Tests pin every field's wire form.
struct Json(String);

impl Json {
    fn head(uid: &str, allowed: bool, extra: usize) -> Self {
        let mut out = Self(String::with_capacity(160 + uid.len() + extra));
        out.raw("{\"apiVersion\":\"");
        out.raw(API_VERSION);
        out.raw("\",\"kind\":\"");
        out.raw(KIND);
        out.raw("\",\"response\":{\"uid\":");
        out.string(uid);
        out.raw(if allowed {
            ",\"allowed\":true"
        } else {
            ",\"allowed\":false"
        });
        out
    }

    /// The metav1.Status of a refusal; kubectl shows `reason` in parentheses and then
    /// `message`, which `write` appends already escaped for a JSON string.
    fn status(&mut self, code: u16, reason: &str, write: impl FnOnce(&mut String)) {
        self.raw(",\"status\":{\"code\":");
        self.raw(itoa::Buffer::new().format(code));
        self.raw(",\"reason\":");
        self.string(reason);
        self.raw(",\"message\":\"");
        write(&mut self.0);
        self.raw("\"}");
    }

    /// A field holding `items` between `open` and `close`, comma-separated; left out when
    /// there are none.
    fn field<T>(
        &mut self,
        open: &str,
        items: impl IntoIterator<Item = T>,
        close: &str,
        mut write: impl FnMut(&mut Self, T),
    ) {
        let mut any = false;
        for item in items {
            self.raw(if any { "," } else { open });
            any = true;
            write(self, item);
        }
        if any {
            self.raw(close);
        }
    }

    fn raw(&mut self, s: &str) {
        self.0.push_str(s);
    }

    fn string(&mut self, s: &str) {
        json_string::push(&mut self.0, s);
    }

    fn finish(mut self) -> Vec<u8> {
        self.raw("}}");
        self.0.into_bytes()
    }
}

/// The name users know the object by: its name, or generateName for pods a controller creates.
fn subject_name(req: &Request) -> &str {
    match req.object.workload() {
        Some(w) if !w.name.is_empty() => &w.name,
        _ => &req.name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_agree<T: Names>() {
        for (at, name) in T::NAMES.iter().enumerate() {
            assert_eq!(T::field(name), Some(at), "{name}");
        }
        assert_eq!(T::field("status"), None);
    }

    #[test]
    fn each_field_is_found_at_its_name() {
        names_agree::<ObjectParts>();
        names_agree::<workload::MetaTexts>();
        names_agree::<RequestIn<Parts>>();
    }
}
