//! The Kubernetes CEL libraries the cel crate does not have (k8s.io/apiserver/pkg/cel/library):
//! regex (`find`, `findAll`), lists (`isSorted`, `sum`, `min`, `max`, `indexOf`,
//! `lastIndexOf`), quantity, semver, ip and cidr, url and sets. Each function keeps the Kubernetes name, argument types and error cases; the
//! tests run the examples of the Kubernetes CEL documentation.

use std::net::IpAddr;

use cel::common::types::{
    self, BOOL_TYPE, CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelString, INT_TYPE,
    LIST_TYPE, STRING_TYPE, Type,
};
use cel::common::value::{CowVal, StaticVal, Val};
use cel::extractors::This;
use cel::{Env, ExecutionError, Value};
use std::sync::Arc;

type Args<'b, 'v> = Vec<CowVal<'b, 'v>>;
type Returned<'b, 'v> = Result<CowVal<'b, 'v>, ExecutionError>;

/// Registers the regex and list functions, which the crate offers only on a context.
pub fn register_functions(root: &mut cel::Context<'static, 'static>) {
    root.add_function("find", find).expect("find is free");
    root.add_function("findAll", find_all)
        .expect("findAll is free");
    root.add_function("isSorted", is_sorted)
        .expect("isSorted is free");
    root.add_function("sum", sum).expect("sum is free");
    root.add_function("min", |This(this): This<Arc<Vec<Value>>>| {
        extreme(&this, "min", std::cmp::Ordering::Less)
    })
    .expect("min is free");
    root.add_function("max", |This(this): This<Arc<Vec<Value>>>| {
        extreme(&this, "max", std::cmp::Ordering::Greater)
    })
    .expect("max is free");
}

/// Registers every other function of this module on `env`.
pub fn register(env: &mut Env) -> Result<(), cel::DeclarationError> {
    for t in [&QUANTITY, &SEMVER, &IP, &CIDR, &URL] {
        env.add_type(t.to_owned())?;
    }
    // lists
    env.add_member_overload("indexOf", "list_indexOf", LIST_TYPE, vec![dyn_()], index_of)?;
    env.add_member_overload(
        "lastIndexOf",
        "list_lastIndexOf",
        LIST_TYPE,
        vec![dyn_()],
        last_index_of,
    )?;
    // sets
    let two_lists = || vec![LIST_TYPE, LIST_TYPE];
    env.add_overload("sets.contains", "sets_contains", two_lists(), sets_contains)?;
    env.add_overload(
        "sets.equivalent",
        "sets_equivalent",
        two_lists(),
        sets_equivalent,
    )?;
    env.add_overload(
        "sets.intersects",
        "sets_intersects",
        two_lists(),
        sets_intersects,
    )?;
    // quantity
    env.add_overload(
        "quantity",
        "string_to_quantity",
        vec![STRING_TYPE],
        quantity,
    )?;
    env.add_overload(
        "isQuantity",
        "is_quantity_string",
        vec![STRING_TYPE],
        is_quantity,
    )?;
    let q = || QUANTITY.to_owned();
    env.add_member_overload("sign", "quantity_sign", q(), vec![], q_sign)?;
    env.add_member_overload(
        "isInteger",
        "quantity_is_integer",
        q(),
        vec![],
        q_is_integer,
    )?;
    env.add_member_overload(
        "asInteger",
        "quantity_get_integer",
        q(),
        vec![],
        q_as_integer,
    )?;
    env.add_member_overload(
        "asApproximateFloat",
        "quantity_get_float",
        q(),
        vec![],
        q_float,
    )?;
    env.add_member_overload("add", "quantity_add", q(), vec![q()], q_add)?;
    env.add_member_overload("add", "quantity_add_int", q(), vec![INT_TYPE], q_add)?;
    env.add_member_overload("sub", "quantity_sub", q(), vec![q()], q_sub)?;
    env.add_member_overload("sub", "quantity_sub_int", q(), vec![INT_TYPE], q_sub)?;
    env.add_member_overload(
        "isLessThan",
        "quantity_less",
        q(),
        vec![q()],
        less::<Quantity>,
    )?;
    env.add_member_overload(
        "isGreaterThan",
        "quantity_greater",
        q(),
        vec![q()],
        greater::<Quantity>,
    )?;
    env.add_member_overload(
        "compareTo",
        "quantity_compare",
        q(),
        vec![q()],
        compare::<Quantity>,
    )?;
    // semver
    env.add_overload("semver", "string_to_semver", vec![STRING_TYPE], semver)?;
    env.add_overload(
        "semver",
        "string_bool_to_semver",
        vec![STRING_TYPE, BOOL_TYPE],
        semver,
    )?;
    env.add_overload("isSemver", "is_semver_string", vec![STRING_TYPE], is_semver)?;
    env.add_overload(
        "isSemver",
        "is_semver_string_bool",
        vec![STRING_TYPE, BOOL_TYPE],
        is_semver,
    )?;
    let v = || SEMVER.to_owned();
    env.add_member_overload("major", "semver_major", v(), vec![], |a| part(a, 0))?;
    env.add_member_overload("minor", "semver_minor", v(), vec![], |a| part(a, 1))?;
    env.add_member_overload("patch", "semver_patch", v(), vec![], |a| part(a, 2))?;
    env.add_member_overload("isLessThan", "semver_less", v(), vec![v()], less::<Semver>)?;
    env.add_member_overload(
        "isGreaterThan",
        "semver_greater",
        v(),
        vec![v()],
        greater::<Semver>,
    )?;
    env.add_member_overload(
        "compareTo",
        "semver_compare",
        v(),
        vec![v()],
        compare::<Semver>,
    )?;
    // ip and cidr
    env.add_overload("ip", "string_to_ip", vec![STRING_TYPE], ip)?;
    env.add_overload("isIP", "is_ip", vec![STRING_TYPE], is_ip)?;
    env.add_overload(
        "ip.isCanonical",
        "ip_is_canonical",
        vec![STRING_TYPE],
        ip_is_canonical,
    )?;
    let i = || IP.to_owned();
    env.add_member_overload("family", "ip_family", i(), vec![], ip_family)?;
    for (name, test) in IP_TESTS {
        env.add_member_overload(name, &format!("ip_{name}"), i(), vec![], *test)?;
    }
    env.add_overload("string", "ip_to_string", vec![i()], to_string::<Ip>)?;
    env.add_overload("cidr", "string_to_cidr", vec![STRING_TYPE], cidr)?;
    env.add_overload("isCIDR", "is_cidr", vec![STRING_TYPE], is_cidr)?;
    let c = || CIDR.to_owned();
    env.add_member_overload(
        "containsIP",
        "cidr_contains_ip_ip",
        c(),
        vec![i()],
        contains_ip,
    )?;
    env.add_member_overload(
        "containsIP",
        "cidr_contains_ip_string",
        c(),
        vec![STRING_TYPE],
        contains_ip,
    )?;
    env.add_member_overload(
        "containsCIDR",
        "cidr_contains_cidr",
        c(),
        vec![c()],
        contains_cidr,
    )?;
    env.add_member_overload(
        "containsCIDR",
        "cidr_contains_cidr_string",
        c(),
        vec![STRING_TYPE],
        contains_cidr,
    )?;
    env.add_member_overload("ip", "cidr_ip", c(), vec![], cidr_ip)?;
    env.add_member_overload("masked", "cidr_masked", c(), vec![], cidr_masked)?;
    env.add_member_overload(
        "prefixLength",
        "cidr_prefix_length",
        c(),
        vec![],
        prefix_length,
    )?;
    env.add_overload("string", "cidr_to_string", vec![c()], to_string::<Cidr>)?;
    // url
    env.add_overload("url", "string_to_url", vec![STRING_TYPE], url)?;
    env.add_overload("isURL", "is_url_string", vec![STRING_TYPE], is_url)?;
    let u = || URL.to_owned();
    for (name, get) in URL_PARTS {
        env.add_member_overload(name, &format!("url_{name}"), u(), vec![], *get)?;
    }
    env.add_member_overload("getQuery", "url_getQuery", u(), vec![], url_query)?;
    Ok(())
}

/// The names this module adds, for the load-time check of what an expression calls.
pub const FUNCTIONS: &[&str] = &[
    "indexOf",
    "lastIndexOf",
    "contains",
    "equivalent",
    "intersects",
    "quantity",
    "isQuantity",
    "sign",
    "isInteger",
    "asInteger",
    "asApproximateFloat",
    "add",
    "sub",
    "isLessThan",
    "isGreaterThan",
    "compareTo",
    "semver",
    "isSemver",
    "major",
    "minor",
    "patch",
    "ip",
    "isIP",
    "isCanonical",
    "family",
    "isUnspecified",
    "isLoopback",
    "isLinkLocalMulticast",
    "isLinkLocalUnicast",
    "isGlobalUnicast",
    "cidr",
    "isCIDR",
    "containsIP",
    "containsCIDR",
    "masked",
    "prefixLength",
    "url",
    "isURL",
    "getScheme",
    "getHost",
    "getHostname",
    "getPort",
    "getEscapedPath",
    "getQuery",
];

/// The names of function namespaces (`sets.contains`, `ip.isCanonical`).
pub const NAMESPACES: &[&str] = &["sets", "ip"];

fn dyn_() -> Type {
    types::DYN_TYPE
}

fn take<'b, 'v, const N: usize>(args: Args<'b, 'v>) -> Result<[CowVal<'b, 'v>; N], ExecutionError> {
    args.try_into()
        .map_err(|a: Vec<_>| ExecutionError::invalid_argument_count(N, a.len()))
}

fn arg<'a, T: StaticVal>(v: &'a CowVal<'_, '_>) -> Result<&'a T, ExecutionError> {
    v.as_ref()
        .as_any()
        .and_then(|a| a.downcast_ref::<T>())
        .ok_or_else(|| ExecutionError::UnexpectedType {
            got: v.get_type().name().to_owned(),
            want: T::cel_type().name().to_owned(),
        })
}

fn text<'a>(v: &'a CowVal<'_, '_>) -> Result<&'a str, ExecutionError> {
    v.downcast_ref::<CelString>()
        .map(CelString::inner)
        .ok_or_else(|| ExecutionError::UnexpectedType {
            got: v.get_type().name().to_owned(),
            want: "string".to_owned(),
        })
}

fn boolean<'b, 'v>(b: bool) -> Returned<'b, 'v> {
    Ok(CowVal::owned(CelBool::from(b)))
}

fn int<'b, 'v>(i: i64) -> Returned<'b, 'v> {
    Ok(CowVal::owned(CelInt::from(i)))
}

fn string<'b, 'v>(s: String) -> Returned<'b, 'v> {
    Ok(CowVal::owned(CelString::from(s)))
}

fn owned<'b, 'v, T: Val + 'static>(t: T) -> Returned<'b, 'v> {
    Ok(CowVal::owned(t))
}

/// The Kubernetes library types: opaque values compared with `==` and their methods.
macro_rules! library_type {
    ($ty:ident, $static:ident, $name:literal) => {
        static $static: Type = Type::new_unspecified_type($name);

        impl Val for $ty {
            fn get_type(&self) -> &Type {
                &$static
            }
            fn cel_type() -> &'static Type {
                &$static
            }
            fn equals(&self, other: &dyn Val) -> bool {
                other
                    .as_any()
                    .and_then(|o| o.downcast_ref::<$ty>())
                    .is_some_and(|o| o == self)
            }
            fn clone_as_boxed<'w>(&self) -> Box<dyn Val + 'w> {
                Box::new(self.clone())
            }
            fn as_any(&self) -> Option<&dyn std::any::Any> {
                Some(self)
            }
        }

        impl StaticVal for $ty {}
    };
}

// ---- regex and lists ---------------------------------------------------------------------

fn regex(pattern: &str) -> Result<regex::Regex, cel::ExecutionError> {
    regex::Regex::new(pattern)
        .map_err(|e| cel::ExecutionError::function_error("find", e.to_string()))
}

/// `'abc 123'.find('[0-9]+')`: the first match, or the empty string.
fn find(This(this): This<Arc<String>>, pattern: Arc<String>) -> Result<Value, cel::ExecutionError> {
    let re = regex(&pattern)?;
    Ok(Value::String(Arc::new(
        re.find(&this)
            .map_or(String::new(), |m| m.as_str().to_owned()),
    )))
}

/// `'123 abc 456'.findAll('[0-9]+')`: every match.
fn find_all(
    This(this): This<Arc<String>>,
    pattern: Arc<String>,
) -> Result<Value, cel::ExecutionError> {
    let re = regex(&pattern)?;
    let all: Vec<Value> = re
        .find_iter(&this)
        .map(|m| Value::String(Arc::new(m.as_str().to_owned())))
        .collect();
    Ok(Value::List(Arc::new(all)))
}

/// `[1, 2, 3].isSorted()`.
fn is_sorted(This(this): This<Arc<Vec<Value>>>) -> Result<Value, cel::ExecutionError> {
    let mut sorted = true;
    for pair in this.windows(2) {
        match pair[0].partial_cmp(&pair[1]) {
            Some(std::cmp::Ordering::Greater) => sorted = false,
            Some(_) => {}
            None => {
                return Err(cel::ExecutionError::function_error(
                    "isSorted",
                    "the list's elements are not comparable",
                ));
            }
        }
    }
    Ok(Value::Bool(sorted))
}

/// `[1, 2, 3].sum()`: ints, uints, doubles or durations, all of one type.
fn sum(This(this): This<Arc<Vec<Value>>>) -> Result<Value, cel::ExecutionError> {
    let mut total: Option<Value> = None;
    for item in this.iter() {
        total = Some(match (total, item) {
            (None, v) => v.clone(),
            (Some(Value::Int(a)), Value::Int(b)) => {
                Value::Int(a.checked_add(*b).ok_or_else(|| {
                    cel::ExecutionError::function_error("sum", "integer overflow")
                })?)
            }
            (Some(Value::UInt(a)), Value::UInt(b)) => {
                Value::UInt(a.checked_add(*b).ok_or_else(|| {
                    cel::ExecutionError::function_error("sum", "integer overflow")
                })?)
            }
            (Some(Value::Float(a)), Value::Float(b)) => Value::Float(a + b),
            (Some(Value::Duration(a)), Value::Duration(b)) => Value::Duration(a + *b),
            _ => {
                return Err(cel::ExecutionError::function_error(
                    "sum",
                    "the list mixes types that cannot be added",
                ));
            }
        });
    }
    Ok(total.unwrap_or(Value::Int(0)))
}

/// `[3, 1, 2].min()` and `.max()`: an error on an empty list, as in Kubernetes.
fn extreme(
    list: &[Value],
    name: &str,
    wanted: std::cmp::Ordering,
) -> Result<Value, cel::ExecutionError> {
    let mut best: Option<&Value> = None;
    for item in list {
        best = match best {
            None => Some(item),
            Some(b) => match item.partial_cmp(b) {
                Some(o) if o == wanted => Some(item),
                Some(_) => Some(b),
                None => {
                    return Err(cel::ExecutionError::function_error(
                        name,
                        "the list's elements are not comparable",
                    ));
                }
            },
        };
    }
    best.cloned()
        .ok_or_else(|| cel::ExecutionError::function_error(name, "the list is empty"))
}

// ---- lists and sets ----------------------------------------------------------------------

fn elements<'b, 'v>(list: &'b CowVal<'_, 'v>) -> Result<Vec<&'b (dyn Val + 'v)>, ExecutionError> {
    let iterable = list
        .as_iterable()
        .ok_or_else(|| ExecutionError::UnexpectedType {
            got: list.get_type().name().to_owned(),
            want: "list".to_owned(),
        })?;
    let mut items = iterable.iter();
    let mut out = Vec::new();
    while let Some(item) = items.next() {
        out.push(item);
    }
    Ok(out)
}

/// `[1, 2, 2].indexOf(2) == 1`: the first equal element, or -1.
fn index_of<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let [list, wanted] = take(args)?;
    let items = elements(&list)?;
    int(items
        .iter()
        .position(|i| i.equals(wanted.as_ref()))
        .map_or(-1, |p| p as i64))
}

/// `[1, 2, 2].lastIndexOf(2) == 2`.
fn last_index_of<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let [list, wanted] = take(args)?;
    let items = elements(&list)?;
    int(items
        .iter()
        .rposition(|i| i.equals(wanted.as_ref()))
        .map_or(-1, |p| p as i64))
}

fn contains_all(outer: &[&dyn Val], inner: &[&dyn Val]) -> bool {
    inner.iter().all(|i| outer.iter().any(|o| o.equals(*i)))
}

/// `sets.contains([1, 2, 3], [2])`: every element of the second list is in the first.
fn sets_contains<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let [a, b] = take(args)?;
    boolean(contains_all(&elements(&a)?, &elements(&b)?))
}

/// `sets.equivalent([1, 2], [2, 1, 1])`: the same elements, in any order and number.
fn sets_equivalent<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let [a, b] = take(args)?;
    let (a, b) = (elements(&a)?, elements(&b)?);
    boolean(contains_all(&a, &b) && contains_all(&b, &a))
}

/// `sets.intersects([1, 2], [2, 3])`: at least one element in common.
fn sets_intersects<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let [a, b] = take(args)?;
    let (a, b) = (elements(&a)?, elements(&b)?);
    boolean(b.iter().any(|i| a.iter().any(|o| o.equals(*i))))
}

// ---- quantity ----------------------------------------------------------------------------

/// A resource quantity, held in nano-units.
#[derive(Clone, Debug, PartialEq)]
struct Quantity(i128);

library_type!(Quantity, QUANTITY, "kubernetes.Quantity");

const NANO: i128 = 1_000_000_000;

impl Ord2 for Quantity {
    fn order(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

fn quantity<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let [s] = take(args)?;
    let s = text(&s)?;
    let nanos = crate::quantity::signed_nanos(s).ok_or_else(|| {
        ExecutionError::function_error(
            "quantity",
            format!("{s:?} is not a quantity (quantities must match ^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$)"),
        )
    })?;
    owned(Quantity(nanos))
}

fn is_quantity<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let [s] = take(args)?;
    boolean(crate::quantity::signed_nanos(text(&s)?).is_some())
}

fn q_sign<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let [q] = take(args)?;
    int(arg::<Quantity>(&q)?.0.signum() as i64)
}

fn q_is_integer<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let [q] = take(args)?;
    let n = arg::<Quantity>(&q)?.0;
    boolean(n % NANO == 0 && i64::try_from(n / NANO).is_ok())
}

fn q_as_integer<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let [q] = take(args)?;
    let n = arg::<Quantity>(&q)?.0;
    if n % NANO != 0 {
        return Err(ExecutionError::function_error(
            "asInteger",
            "cannot convert value to integer",
        ));
    }
    int(i64::try_from(n / NANO).map_err(|_| {
        ExecutionError::function_error("asInteger", "cannot convert value to integer")
    })?)
}

fn q_float<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let [q] = take(args)?;
    Ok(CowVal::owned(CelDouble::from(
        arg::<Quantity>(&q)?.0 as f64 / NANO as f64,
    )))
}

fn operand(v: &CowVal<'_, '_>) -> Result<i128, ExecutionError> {
    match v.downcast_ref::<CelInt>() {
        Some(i) => Ok(i128::from(*i.inner()) * NANO),
        None => Ok(arg::<Quantity>(v)?.0),
    }
}

fn q_add<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let [q, other] = take(args)?;
    let sum = arg::<Quantity>(&q)?.0.checked_add(operand(&other)?);
    owned(Quantity(sum.ok_or_else(|| {
        ExecutionError::function_error("add", "quantity overflow")
    })?))
}

fn q_sub<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let [q, other] = take(args)?;
    let diff = arg::<Quantity>(&q)?.0.checked_sub(operand(&other)?);
    owned(Quantity(diff.ok_or_else(|| {
        ExecutionError::function_error("sub", "quantity overflow")
    })?))
}

/// The ordering behind `isLessThan`, `isGreaterThan` and `compareTo`.
trait Ord2: StaticVal + Sized {
    fn order(&self, other: &Self) -> std::cmp::Ordering;
}

fn ordering<T: Ord2>(args: Args<'_, '_>) -> Result<std::cmp::Ordering, ExecutionError> {
    let [a, b] = take(args)?;
    Ok(arg::<T>(&a)?.order(arg::<T>(&b)?))
}

fn less<'b, 'v, T: Ord2>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    boolean(ordering::<T>(args)?.is_lt())
}

fn greater<'b, 'v, T: Ord2>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    boolean(ordering::<T>(args)?.is_gt())
}

fn compare<'b, 'v, T: Ord2>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    int(ordering::<T>(args)? as i64)
}

// ---- semver ------------------------------------------------------------------------------

/// A semantic version (semver.org 2.0.0), compared by precedence.
#[derive(Clone, Debug, PartialEq)]
struct Semver {
    core: [u64; 3],
    pre: Vec<String>,
    build: String,
}

library_type!(Semver, SEMVER, "kubernetes.Semver");

impl Ord2 for Semver {
    /// Build metadata does not count; a pre-release sorts before its release; numeric
    /// identifiers sort numerically and below alphanumeric ones.
    fn order(&self, other: &Self) -> std::cmp::Ordering {
        use std::cmp::Ordering::*;
        self.core
            .cmp(&other.core)
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Equal,
                (true, false) => Greater,
                (false, true) => Less,
                (false, false) => {
                    for (a, b) in self.pre.iter().zip(&other.pre) {
                        let o = match (a.parse::<u64>(), b.parse::<u64>()) {
                            (Ok(x), Ok(y)) => x.cmp(&y),
                            (Ok(_), Err(_)) => Less,
                            (Err(_), Ok(_)) => Greater,
                            (Err(_), Err(_)) => a.cmp(b),
                        };
                        if o != Equal {
                            return o;
                        }
                    }
                    self.pre.len().cmp(&other.pre.len())
                }
            })
    }
}

impl Semver {
    /// Strict semver.org syntax; `normalize` first drops a leading `v`, pads a missing minor or
    /// patch with 0 and strips leading zeros, as Kubernetes' `semver(s, true)` does.
    fn parse(s: &str, normalize: bool) -> Option<Self> {
        let owned;
        let s = if normalize {
            let s = s.strip_prefix('v').unwrap_or(s);
            let end = s.find(['-', '+']).unwrap_or(s.len());
            let (core, rest) = s.split_at(end);
            let mut parts: Vec<String> = core
                .split('.')
                .map(|p| {
                    let t = p.trim_start_matches('0');
                    if t.is_empty() && !p.is_empty() {
                        "0"
                    } else {
                        t
                    }
                    .to_owned()
                })
                .collect();
            while parts.len() < 3 {
                parts.push("0".to_owned());
            }
            owned = format!("{}{rest}", parts.join("."));
            owned.as_str()
        } else {
            s
        };
        let (rest, build) = s.split_once('+').unwrap_or((s, ""));
        let (core, pre) = rest.split_once('-').unwrap_or((rest, ""));
        let ident =
            |i: &str| !i.is_empty() && i.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        let number = |n: &str| {
            !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
                && (n == "0" || !n.starts_with('0'))
        };
        let parts: Vec<&str> = core.split('.').collect();
        if parts.len() != 3 || !parts.iter().all(|p| number(p)) {
            return None;
        }
        let pre: Vec<String> = if rest.contains('-') {
            pre.split('.').map(str::to_owned).collect()
        } else {
            Vec::new()
        };
        if pre
            .iter()
            .any(|p| !ident(p) || (p.bytes().all(|b| b.is_ascii_digit()) && !number(p)))
        {
            return None;
        }
        if s.contains('+') && !build.split('.').all(ident) {
            return None;
        }
        Some(Semver {
            core: [
                parts[0].parse().ok()?,
                parts[1].parse().ok()?,
                parts[2].parse().ok()?,
            ],
            pre,
            build: build.to_owned(),
        })
    }
}

fn semver_args(args: Args<'_, '_>) -> Result<(String, bool), ExecutionError> {
    let normalize = args
        .get(1)
        .and_then(|b| b.downcast_ref::<CelBool>())
        .is_some_and(|b| *b.inner());
    let s = args
        .first()
        .ok_or_else(|| ExecutionError::invalid_argument_count(1, 0))?;
    Ok((text(s)?.to_owned(), normalize))
}

fn semver<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let (s, normalize) = semver_args(args)?;
    match Semver::parse(&s, normalize) {
        Some(v) => owned(v),
        None => Err(ExecutionError::function_error(
            "semver",
            format!("{s:?} is not a valid semantic version"),
        )),
    }
}

fn is_semver<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let (s, normalize) = semver_args(args)?;
    boolean(Semver::parse(&s, normalize).is_some())
}

fn part<'b, 'v>(args: Args<'b, 'v>, i: usize) -> Returned<'b, 'v> {
    let [v] = take(args)?;
    int(arg::<Semver>(&v)?.core[i] as i64)
}

// ---- ip and cidr -------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
struct Ip(IpAddr);

library_type!(Ip, IP, "net.IP");

#[derive(Clone, Debug, PartialEq)]
struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

library_type!(Cidr, CIDR, "net.CIDR");

impl std::fmt::Display for Ip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An address as Kubernetes' `ip()` accepts it: no zone, and no IPv4-mapped IPv6 form.
fn parse_ip(s: &str) -> Result<IpAddr, String> {
    let addr: IpAddr = s
        .parse()
        .map_err(|_| format!("IP Address {s:?} parse error during conversion from string"))?;
    if let IpAddr::V6(v6) = addr
        && v6.to_ipv4_mapped().is_some()
    {
        return Err(format!("IPv4-mapped IPv6 address {s:?} is not allowed"));
    }
    Ok(addr)
}

fn parse_cidr(s: &str) -> Result<Cidr, String> {
    let (addr, prefix) = s.split_once('/').ok_or_else(|| {
        format!("network address parse error during conversion from string: {s:?}")
    })?;
    let addr = parse_ip(addr)?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= max && !prefix.starts_with('+'))
        .ok_or_else(|| {
            format!("network address parse error during conversion from string: {s:?}")
        })?;
    Ok(Cidr { addr, prefix })
}

fn fail<'b, 'v>(function: &str, e: String) -> Returned<'b, 'v> {
    Err(ExecutionError::function_error(function, e))
}

fn ip<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let [s] = take(args)?;
    match parse_ip(text(&s)?) {
        Ok(a) => owned(Ip(a)),
        Err(e) => fail("ip", e),
    }
}

fn is_ip<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let [s] = take(args)?;
    boolean(parse_ip(text(&s)?).is_ok())
}

/// Whether the text is the address's canonical form (RFC 5952 for IPv6).
fn ip_is_canonical<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let [s] = take(args)?;
    let s = text(&s)?;
    match parse_ip(s) {
        Ok(a) => boolean(a.to_string() == s),
        Err(e) => fail("ip.isCanonical", e),
    }
}

fn ip_family<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let [i] = take(args)?;
    int(if arg::<Ip>(&i)?.0.is_ipv4() { 4 } else { 6 })
}

type Method = for<'b, 'v> fn(Args<'b, 'v>) -> Returned<'b, 'v>;

const IP_TESTS: &[(&str, Method)] = &[
    ("isUnspecified", |a| ip_test(a, |ip| ip.is_unspecified())),
    ("isLoopback", |a| ip_test(a, |ip| ip.is_loopback())),
    ("isLinkLocalMulticast", |a| {
        ip_test(a, |ip| match ip {
            IpAddr::V4(v4) => v4.octets()[..3] == [224, 0, 0],
            IpAddr::V6(v6) => v6.segments()[0] & 0xff0f == 0xff02,
        })
    }),
    ("isLinkLocalUnicast", |a| {
        ip_test(a, |ip| match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
        })
    }),
    ("isGlobalUnicast", |a| ip_test(a, global_unicast)),
];

/// Go's net.IP.IsGlobalUnicast: not unspecified, loopback, link-local, multicast or broadcast.
fn global_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || v6.segments()[0] & 0xffc0 == 0xfe80)
        }
    }
}

fn ip_test<'b, 'v>(args: Args<'b, 'v>, test: fn(IpAddr) -> bool) -> Returned<'b, 'v> {
    let [i] = take(args)?;
    boolean(test(arg::<Ip>(&i)?.0))
}

fn to_string<'b, 'v, T: StaticVal + std::fmt::Display>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let [v] = take(args)?;
    string(arg::<T>(&v)?.to_string())
}

fn cidr<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let [s] = take(args)?;
    match parse_cidr(text(&s)?) {
        Ok(c) => owned(c),
        Err(e) => fail("cidr", e),
    }
}

fn is_cidr<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let [s] = take(args)?;
    boolean(parse_cidr(text(&s)?).is_ok())
}

fn bits(addr: IpAddr) -> (u128, u8) {
    match addr {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

fn mask(addr: IpAddr, prefix: u8) -> u128 {
    let (value, width) = bits(addr);
    let host = width - prefix;
    if host >= 128 {
        0
    } else {
        value >> host << host
    }
}

impl Cidr {
    fn contains(&self, addr: IpAddr, prefix: u8) -> bool {
        addr.is_ipv4() == self.addr.is_ipv4()
            && prefix >= self.prefix
            && mask(addr, self.prefix) == mask(self.addr, self.prefix)
    }
}

fn contains_ip<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let [c, other] = take(args)?;
    let addr = match other.downcast_ref::<CelString>() {
        Some(s) => {
            parse_ip(s.inner()).map_err(|e| ExecutionError::function_error("containsIP", e))?
        }
        None => arg::<Ip>(&other)?.0,
    };
    let width = bits(addr).1;
    boolean(arg::<Cidr>(&c)?.contains(addr, width))
}

fn contains_cidr<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let [c, other] = take(args)?;
    let other = match other.downcast_ref::<CelString>() {
        Some(s) => {
            parse_cidr(s.inner()).map_err(|e| ExecutionError::function_error("containsCIDR", e))?
        }
        None => arg::<Cidr>(&other)?.clone(),
    };
    boolean(arg::<Cidr>(&c)?.contains(other.addr, other.prefix))
}

fn cidr_ip<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let [c] = take(args)?;
    owned(Ip(arg::<Cidr>(&c)?.addr))
}

fn cidr_masked<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let [c] = take(args)?;
    let c = arg::<Cidr>(&c)?;
    let value = mask(c.addr, c.prefix);
    let addr = match c.addr {
        IpAddr::V4(_) => IpAddr::from((value as u32).to_be_bytes()),
        IpAddr::V6(_) => IpAddr::from(value.to_be_bytes()),
    };
    owned(Cidr {
        addr,
        prefix: c.prefix,
    })
}

fn prefix_length<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let [c] = take(args)?;
    int(i64::from(arg::<Cidr>(&c)?.prefix))
}

// ---- url ---------------------------------------------------------------------------------

/// A URL as Go's url.ParseRequestURI reads it: an absolute URL or an absolute path.
#[derive(Clone, Debug, PartialEq)]
struct Url {
    scheme: String,
    host: String,
    path: String,
    query: String,
}

library_type!(Url, URL, "kubernetes.URL");

impl Url {
    fn parse(s: &str) -> Option<Url> {
        let (rest, query) = s.split_once('?').unwrap_or((s, ""));
        if let Some(path) = rest.strip_prefix('/') {
            return Some(Url {
                scheme: String::new(),
                host: String::new(),
                path: format!("/{path}"),
                query: query.to_owned(),
            });
        }
        let (scheme, rest) = rest.split_once(':')?;
        let mut chars = scheme.chars();
        if !chars.next()?.is_ascii_alphabetic()
            || !chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return None;
        }
        let (host, path) = match rest.strip_prefix("//") {
            Some(authority) => {
                let end = authority.find('/').unwrap_or(authority.len());
                let (host, path) = authority.split_at(end);
                // userinfo is not part of the host
                let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
                (host.to_owned(), path.to_owned())
            }
            None if rest.starts_with('/') => (String::new(), rest.to_owned()),
            // an opaque URL such as mailto:x is valid, with no host or path
            None => (String::new(), String::new()),
        };
        if host.contains(' ') {
            return None;
        }
        Some(Url {
            scheme: scheme.to_owned(),
            host,
            path,
            query: query.to_owned(),
        })
    }

    fn hostname(&self) -> &str {
        match self.host.strip_prefix('[') {
            Some(v6) => v6.split_once(']').map_or(v6, |(h, _)| h),
            None => self.host.rsplit_once(':').map_or(&self.host, |(h, _)| h),
        }
    }

    fn port(&self) -> &str {
        let after = match self.host.rfind(']') {
            Some(i) => &self.host[i + 1..],
            None => &self.host,
        };
        after.rsplit_once(':').map_or("", |(_, p)| p)
    }
}

/// Percent-escapes what Go's url.EscapedPath escapes in a path.
fn escape_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/!$&'()*+,;=:@%".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn url<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let [s] = take(args)?;
    let s = text(&s)?;
    match Url::parse(s) {
        Some(u) => owned(u),
        None => fail(
            "url",
            format!("URL {s:?} is not an absolute URI or an absolute path"),
        ),
    }
}

fn is_url<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let [s] = take(args)?;
    boolean(Url::parse(text(&s)?).is_some())
}

const URL_PARTS: &[(&str, Method)] = &[
    ("getScheme", |a| url_part(a, |u| u.scheme.clone())),
    ("getHost", |a| url_part(a, |u| u.host.clone())),
    ("getHostname", |a| url_part(a, |u| u.hostname().to_owned())),
    ("getPort", |a| url_part(a, |u| u.port().to_owned())),
    ("getEscapedPath", |a| url_part(a, |u| escape_path(&u.path))),
];

fn url_part<'b, 'v>(args: Args<'b, 'v>, get: fn(&Url) -> String) -> Returned<'b, 'v> {
    let [u] = take(args)?;
    string(get(arg::<Url>(&u)?))
}

/// `getQuery()`: each key with its values, in order.
fn url_query<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let [u] = take(args)?;
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for pair in arg::<Url>(&u)?
        .query
        .split(['&', ';'])
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (unescape(k), unescape(v));
        match out.iter_mut().find(|(key, _)| *key == k) {
            Some((_, values)) => values.push(v),
            None => out.push((k, vec![v])),
        }
    }
    let map: std::collections::HashMap<CelMapKey<'static>, Box<dyn Val>> = out
        .into_iter()
        .map(|(k, values)| {
            let list: Vec<Box<dyn Val>> = values
                .into_iter()
                .map(|v| Box::new(CelString::from(v)) as Box<dyn Val>)
                .collect();
            (
                CelMapKey::String(CelString::from(k)),
                Box::new(CelList::from(list)) as Box<dyn Val>,
            )
        })
        .collect();
    owned(CelMap::from(map))
}
