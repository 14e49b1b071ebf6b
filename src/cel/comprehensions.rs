//! Two-variable comprehensions (cel-go's comprehensions v2, offered by Kubernetes):
//! `all`, `exists`, `existsOne` with an index or key and a value, `transformList`,
//! `transformMap` and `transformMapEntry`. The cel crate parses them but its interpreter binds
//! one variable per loop, so each macro loops over `@pairs(range)`, a list of
//! `[index or key, value]` pairs, with the two names rewritten to the pair's elements.

use cel::common::ast::{CallExpr, ComprehensionExpr, Expr, IdedExpr, ListExpr, LiteralValue};
use cel::common::types::{CelInt, CelList, CelMap, CelMapKey, CelString, DYN_TYPE};
use cel::common::value::{CowVal, Val};
use cel::parser::{Macro, MacroExprHelper, ParseError};
use cel::{Env, ExecutionError};

const PAIRS: &str = "@pairs";
const TO_MAP: &str = "@toMap";
const MERGE: &str = "@mergeEntries";
const ITEM: &str = "@pair";
const RESULT: &str = "@result";

/// What a macro folds its pairs into.
#[derive(Clone, Copy)]
enum Kind {
    All,
    Exists,
    ExistsOne,
    List,
    Map,
    MapEntry,
}

pub fn register(env: &mut Env) -> Result<(), cel::DeclarationError> {
    for (name, kind, arities) in [
        ("all", Kind::All, &[3][..]),
        ("exists", Kind::Exists, &[3]),
        ("existsOne", Kind::ExistsOne, &[3]),
        ("exists_one", Kind::ExistsOne, &[3]),
        ("transformList", Kind::List, &[3, 4]),
        ("transformMap", Kind::Map, &[3, 4]),
        ("transformMapEntry", Kind::MapEntry, &[3, 4]),
    ] {
        for &arity in arities {
            env.add_macro(Macro::receiver(name, arity, move |helper, target, args| {
                expand(helper, target, args, kind).map(Some)
            }))?;
        }
    }
    env.add_overload(PAIRS, PAIRS, vec![DYN_TYPE], pairs)?;
    env.add_overload(TO_MAP, TO_MAP, vec![DYN_TYPE], to_map)?;
    env.add_overload(MERGE, MERGE, vec![DYN_TYPE], merge_entries)?;
    Ok(())
}

/// The names of the macros, for the load-time check of what an expression calls.
pub const FUNCTIONS: &[&str] = &["transformList", "transformMap", "transformMapEntry"];

fn ident_name(e: &IdedExpr, helper: &MacroExprHelper<'_>) -> Result<String, ParseError> {
    match &e.expr {
        Expr::Ident(name) => Ok(name.clone()),
        _ => Err(helper.new_error(e.id, "argument must be a simple name")),
    }
}

fn call(helper: &mut MacroExprHelper<'_>, func: &str, args: Vec<IdedExpr>) -> IdedExpr {
    helper.next_expr(Expr::Call(CallExpr {
        func_name: func.to_owned(),
        target: None,
        args,
    }))
}

fn ident(helper: &mut MacroExprHelper<'_>, name: &str) -> IdedExpr {
    helper.next_expr(Expr::Ident(name.to_owned()))
}

fn literal(helper: &mut MacroExprHelper<'_>, value: LiteralValue) -> IdedExpr {
    helper.next_expr(Expr::Literal(value))
}

fn list(helper: &mut MacroExprHelper<'_>, items: Vec<IdedExpr>) -> IdedExpr {
    helper.next_expr(Expr::List(ListExpr::new(items)))
}

/// `@pair[index]`.
fn element(helper: &mut MacroExprHelper<'_>, index: i64) -> IdedExpr {
    let pair = ident(helper, ITEM);
    let at = literal(helper, LiteralValue::Int(index.into()));
    call(helper, "_[_]", vec![pair, at])
}

/// Replaces the free occurrences of `name` in `e` with `@pair[index]`.
fn substitute(e: &mut IdedExpr, name: &str, index: i64, helper: &mut MacroExprHelper<'_>) {
    match &mut e.expr {
        Expr::Ident(n) if n == name => *e = element(helper, index),
        Expr::Call(c) => {
            if let Some(t) = c.target.as_deref_mut() {
                substitute(t, name, index, helper);
            }
            for a in &mut c.args {
                substitute(a, name, index, helper);
            }
        }
        Expr::List(l) => {
            for x in &mut l.elements {
                substitute(x, name, index, helper);
            }
        }
        Expr::Map(m) => {
            for entry in &mut m.entries {
                if let cel::common::ast::EntryExpr::MapEntry(me) = &mut entry.expr {
                    substitute(&mut me.key, name, index, helper);
                    substitute(&mut me.value, name, index, helper);
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &mut s.entries {
                if let cel::common::ast::EntryExpr::StructField(f) = &mut entry.expr {
                    substitute(&mut f.value, name, index, helper);
                }
            }
        }
        Expr::Select(s) => substitute(&mut s.operand, name, index, helper),
        Expr::Comprehension(c) => {
            substitute(&mut c.iter_range, name, index, helper);
            substitute(&mut c.accu_init, name, index, helper);
            // A nested loop that binds the same name hides ours.
            let shadowed =
                c.iter_var == name || c.iter_var2.as_deref() == Some(name) || c.accu_var == name;
            if !shadowed {
                substitute(&mut c.loop_cond, name, index, helper);
                substitute(&mut c.loop_step, name, index, helper);
                substitute(&mut c.result, name, index, helper);
            }
        }
        _ => {}
    }
}

fn expand(
    helper: &mut MacroExprHelper<'_>,
    target: &mut Option<IdedExpr>,
    args: &mut Vec<IdedExpr>,
    kind: Kind,
) -> Result<IdedExpr, ParseError> {
    let range = target.take().expect("a receiver macro has a target");
    let first = ident_name(&args[0], helper)?;
    let second = ident_name(&args[1], helper)?;
    let mut body: Vec<IdedExpr> = args.drain(2..).collect();
    for e in &mut body {
        substitute(e, &first, 0, helper);
        substitute(e, &second, 1, helper);
    }
    let range = call(helper, PAIRS, vec![range]);
    let result = ident(helper, RESULT);
    let (init, cond, step, out) = match kind {
        Kind::All | Kind::Exists => {
            let all = matches!(kind, Kind::All);
            let init = literal(helper, LiteralValue::Boolean(all.into()));
            let acc = ident(helper, RESULT);
            let cond_arg = if all {
                acc
            } else {
                call(helper, "!_", vec![acc])
            };
            let cond = call(helper, "@not_strictly_false", vec![cond_arg]);
            let acc = ident(helper, RESULT);
            let op = if all { "_&&_" } else { "_||_" };
            let step = call(helper, op, vec![acc, body.remove(0)]);
            (init, cond, step, result)
        }
        Kind::ExistsOne => {
            let init = literal(helper, LiteralValue::Int(0.into()));
            let cond = literal(helper, LiteralValue::Boolean(true.into()));
            let acc = ident(helper, RESULT);
            let one = literal(helper, LiteralValue::Int(1.into()));
            let plus = call(helper, "_+_", vec![acc, one]);
            let same = ident(helper, RESULT);
            let step = call(helper, "_?_:_", vec![body.remove(0), plus, same]);
            let one = literal(helper, LiteralValue::Int(1.into()));
            let out = call(helper, "_==_", vec![result, one]);
            (init, cond, step, out)
        }
        Kind::List | Kind::Map | Kind::MapEntry => {
            let init = list(helper, Vec::new());
            let cond = literal(helper, LiteralValue::Boolean(true.into()));
            let value = body.pop().expect("the macro has a body");
            let filter = body.pop();
            let item = match kind {
                Kind::Map => {
                    let key = element(helper, 0);
                    list(helper, vec![key, value])
                }
                _ => value,
            };
            let acc = ident(helper, RESULT);
            let single = list(helper, vec![item]);
            let appended = call(helper, "_+_", vec![acc, single]);
            let step = match filter {
                Some(f) => {
                    let same = ident(helper, RESULT);
                    call(helper, "_?_:_", vec![f, appended, same])
                }
                None => appended,
            };
            let out = match kind {
                Kind::Map => call(helper, TO_MAP, vec![result]),
                Kind::MapEntry => call(helper, MERGE, vec![result]),
                _ => result,
            };
            (init, cond, step, out)
        }
    };
    Ok(
        helper.next_expr(Expr::Comprehension(Box::new(ComprehensionExpr {
            iter_range: range,
            iter_var: ITEM.to_owned(),
            iter_var2: None,
            accu_var: RESULT.to_owned(),
            accu_init: init,
            loop_cond: cond,
            loop_step: step,
            result: out,
        }))),
    )
}

type Args<'b, 'v> = Vec<CowVal<'b, 'v>>;
type Returned<'b, 'v> = Result<CowVal<'b, 'v>, ExecutionError>;

fn only<'b, 'v>(mut args: Args<'b, 'v>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    match (args.pop(), args.is_empty()) {
        (Some(a), true) => Ok(a),
        _ => Err(ExecutionError::invalid_argument_count(1, 0)),
    }
}

/// A list's `[index, value]` pairs, or a map's `[key, value]` pairs.
fn pairs<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let range = only(args)?;
    let iterable = range
        .as_iterable()
        .ok_or_else(|| ExecutionError::UnexpectedType {
            got: range.get_type().name().to_owned(),
            want: "list or map".to_owned(),
        })?;
    let is_map = range.get_type().name().starts_with("map");
    let mut items = iterable.iter();
    let mut out: Vec<Box<dyn Val + 'v>> = Vec::new();
    let mut index = 0i64;
    while let Some(item) = items.next() {
        let pair: Vec<Box<dyn Val + 'v>> = if is_map {
            let value = range
                .as_indexer()
                .ok_or_else(|| ExecutionError::function_error(PAIRS, "map without index"))?
                .get(item)?
                .into_owned();
            vec![item.clone_as_boxed(), value]
        } else {
            vec![Box::new(CelInt::from(index)), item.clone_as_boxed()]
        };
        index += 1;
        out.push(Box::new(CelList::from(pair)));
    }
    Ok(CowVal::owned(CelList::from(out)))
}

fn map_key(key: &dyn Val) -> Result<CelMapKey<'static>, ExecutionError> {
    if let Some(s) = key.downcast_ref::<CelString>() {
        return Ok(CelMapKey::String(CelString::from(s.inner().to_owned())));
    }
    if let Some(i) = key.downcast_ref::<CelInt>() {
        return Ok(CelMapKey::Int(*i));
    }
    Err(ExecutionError::function_error(
        "transformMap",
        format!("unsupported map key type {}", key.get_type().name()),
    ))
}

/// `[[k, v], ...]` as a map.
fn to_map<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let entries = only(args)?;
    let list = entries
        .downcast_ref::<CelList>()
        .ok_or_else(|| ExecutionError::function_error(TO_MAP, "not a list"))?;
    let mut map = std::collections::HashMap::new();
    for pair in list.inner() {
        let pair = pair
            .downcast_ref::<CelList>()
            .ok_or_else(|| ExecutionError::function_error(TO_MAP, "not a pair"))?;
        let [k, v] = pair.inner() else {
            return Err(ExecutionError::function_error(TO_MAP, "not a pair"));
        };
        map.insert(map_key(k.as_ref())?, v.clone());
    }
    Ok(CowVal::owned(CelMap::from(map)))
}

/// transformMapEntry: the single-entry maps merged; a key given twice is an error, as in
/// cel-go.
fn merge_entries<'b, 'v>(args: Args<'b, 'v>) -> Returned<'b, 'v> {
    let entries = only(args)?;
    let list = entries
        .downcast_ref::<CelList>()
        .ok_or_else(|| ExecutionError::function_error(MERGE, "not a list"))?;
    let mut map = std::collections::HashMap::new();
    for entry in list.inner() {
        let (Some(keys), Some(index)) = (entry.as_iterable(), entry.as_indexer()) else {
            return Err(ExecutionError::function_error(
                "transformMapEntry",
                "the expression must give a map",
            ));
        };
        let mut keys = keys.iter();
        while let Some(k) = keys.next() {
            let key = map_key(k)?;
            let value = index.get(k)?.into_owned();
            if map.insert(key, value).is_some() {
                return Err(ExecutionError::function_error(
                    "transformMapEntry",
                    "insert failed: key already exists",
                ));
            }
        }
    }
    Ok(CowVal::owned(CelMap::from(map)))
}
