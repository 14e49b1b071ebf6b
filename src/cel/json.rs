//! The request's JSON as CEL values, read where it lies. Converting a whole Pod into the
//! interpreter's own maps and lists cost more than every rule that read it (BENCHMARKS.md,
//! "CEL rules"); an expression reads a few fields, so only those become CEL values, when read.
//!
//! Scalars become the built-in values (a string borrows the JSON's text). A list becomes a
//! built-in list of lazy elements, so equality, `+`, `in` and every list function behave as
//! they do on a literal. An object stays an [`Object`] over the JSON map: indexing, `has()`,
//! `in`, `size()` and comprehensions over its keys read the map directly.

use std::sync::OnceLock;

use cel::ExecutionError;
use cel::common::traits::{self, Container, Indexer, Iterable, Sizer, Zeroer};
use cel::common::types::{
    self, CelBool, CelDouble, CelInt, CelList, CelNull, CelString, CelUInt, Type,
};
use cel::common::value::{CowVal, Val};
use serde_json::{Map, Value as Json};

/// What one expression may still spend, in reads of the request's data: Kubernetes' per-call
/// cost limit. Every field read, key test and list built from the request costs its size, so
/// an expression that loops over the request's lists inside each other stops with an error
/// (decided by failurePolicy) instead of holding a server thread.
pub const BUDGET: u64 = 1_000_000;

thread_local! {
    static REMAINING: std::cell::Cell<u64> = const { std::cell::Cell::new(BUDGET) };
}

/// Gives the next expression on this thread the whole budget.
pub fn reset_budget() {
    REMAINING.with(|r| r.set(BUDGET));
}

/// Spends `cost` of the budget, or fails as cel-go does when the limit is reached.
pub fn charge(cost: u64) -> Result<(), ExecutionError> {
    REMAINING.with(|r| match r.get().checked_sub(cost) {
        Some(left) => {
            r.set(left);
            Ok(())
        }
        None => Err(ExecutionError::function_error(
            "cost",
            format!(
                "operation cancelled: actual cost limit exceeded ({BUDGET} reads of the request)"
            ),
        )),
    })
}

/// `json` as a CEL value. Integers are `int` (as the apiserver's schemas declare them) unless
/// they only fit a `uint`.
pub fn val<'v>(json: &'v Json) -> Box<dyn Val + 'v> {
    match json {
        Json::Null => Box::new(CelNull),
        Json::Bool(b) => Box::new(CelBool::from(*b)),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Box::new(CelInt::from(i))
            } else if let Some(u) = n.as_u64() {
                Box::new(CelUInt::from(u))
            } else {
                Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN)))
            }
        }
        Json::String(s) => Box::new(CelString::from(s.as_str())),
        Json::Array(items) => Box::new(CelList::from(items.iter().map(val).collect::<Vec<_>>())),
        Json::Object(map) => Box::new(Object::new(map)),
    }
}

/// A JSON object, read on access.
struct Object<'v> {
    map: &'v Map<String, Json>,
    /// The keys as CEL strings, made the first time a comprehension iterates over them.
    keys: OnceLock<Vec<CelString<'v>>>,
}

impl<'v> Object<'v> {
    fn new(map: &'v Map<String, Json>) -> Self {
        Self {
            map,
            keys: OnceLock::new(),
        }
    }
}

impl std::fmt::Debug for Object<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.map.iter()).finish()
    }
}

impl<'v> Val for Object<'v> {
    fn get_type(&self) -> &Type {
        &types::MAP_TYPE
    }

    fn cel_type() -> &'static Type {
        &types::MAP_TYPE
    }

    fn as_container(&self) -> Option<&dyn Container> {
        Some(self)
    }

    fn as_indexer<'b, 'w>(&'b self) -> Option<&'b (dyn Indexer + 'w)>
    where
        Self: 'w,
    {
        Some(self)
    }

    fn into_indexer<'w>(self: Box<Self>) -> Option<Box<dyn Indexer + 'w>>
    where
        Self: 'w,
    {
        Some(self)
    }

    fn as_iterable<'b, 'w>(&'b self) -> Option<&'b (dyn Iterable + 'w)>
    where
        Self: 'w,
    {
        Some(self)
    }

    fn as_sizer(&self) -> Option<&dyn Sizer> {
        Some(self)
    }

    fn as_zeroer(&self) -> Option<&dyn Zeroer> {
        Some(self)
    }

    /// A map with the same keys and equal values, whichever way either is held.
    fn equals(&self, other: &dyn Val) -> bool {
        let (Some(size), Some(index)) = (other.as_sizer(), other.as_indexer()) else {
            return false;
        };
        *size.size().inner() == self.map.len() as i64
            && self.map.iter().all(|(k, v)| {
                index
                    .get(&CelString::from(k.as_str()))
                    .is_ok_and(|theirs| val(v).equals(theirs.as_ref()))
            })
    }

    fn clone_as_boxed<'w>(&self) -> Box<dyn Val + 'w>
    where
        Self: 'w,
    {
        Box::new(Object::new(self.map))
    }
}

impl<'v> Indexer for Object<'v> {
    fn get<'b, 'w>(&'b self, key: &dyn Val) -> Result<CowVal<'b, 'w>, ExecutionError>
    where
        Self: 'w,
    {
        let key =
            key.downcast_ref::<CelString>()
                .ok_or_else(|| ExecutionError::UnexpectedType {
                    got: key.get_type().name().to_owned(),
                    want: "string".to_owned(),
                })?;
        charge(1)?;
        match self.map.get(key.inner()) {
            Some(json) => {
                if let Json::Array(items) = json {
                    charge(items.len() as u64)?;
                }
                Ok(CowVal::Owned(val(json)))
            }
            None => Err(ExecutionError::no_such_key(key.inner())),
        }
    }

    fn steal<'w>(self: Box<Self>, key: &dyn Val) -> Result<Box<dyn Val + 'w>, ExecutionError>
    where
        Self: 'w,
    {
        self.get(key).map(CowVal::into_owned)
    }
}

impl Container for Object<'_> {
    fn contains(&self, value: &dyn Val) -> Result<bool, ExecutionError> {
        charge(1)?;
        Ok(value
            .downcast_ref::<CelString>()
            .is_some_and(|k| self.map.contains_key(k.inner())))
    }
}

impl Sizer for Object<'_> {
    fn size(&self) -> CelInt {
        (self.map.len() as i64).into()
    }
}

impl Zeroer for Object<'_> {
    fn is_zero_value(&self) -> bool {
        self.map.is_empty()
    }
}

impl<'v> Iterable for Object<'v> {
    fn iter<'b, 'w>(&'b self) -> Box<dyn traits::Iterator<'b, 'w> + 'b>
    where
        Self: 'w,
    {
        let keys = self.keys.get_or_init(|| {
            self.map
                .keys()
                .map(|k| CelString::from(k.as_str()))
                .collect()
        });
        Box::new(Keys(keys.iter()))
    }
}

struct Keys<'b, 'v>(std::slice::Iter<'b, CelString<'v>>);

impl<'b, 'v: 'w, 'w> traits::Iterator<'b, 'w> for Keys<'b, 'v> {
    fn next(&mut self) -> Option<&'b (dyn Val + 'w)> {
        self.0.next().map(|k| k as &dyn Val)
    }
}
