//! CEL as Kubernetes offers it to ValidatingAdmissionPolicies: the cel crate's standard
//! library, macros and optional types, its strings and lists extensions, and the Kubernetes
//! library functions written here. Expressions are compiled once, when a policy is loaded, and
//! one that calls anything this build does not provide is refused then, naming the function,
//! rather than failing on some later request.

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};

pub use cel::Value;
use cel::extractors::This;
use cel::{Context, Env, Program};

/// A compiled expression and the text it came from.
pub struct Expression {
    pub source: String,
    program: Program,
}

impl std::fmt::Debug for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Expression").field(&self.source).finish()
    }
}

/// Why an expression cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("syntax: {0}")]
    Syntax(String),
    #[error(
        "calls {0}(), which portcullis does not provide (see the README's list of CEL functions)"
    )]
    Unsupported(String),
    #[error("reads the variable {0:?}, which is not one of {VARIABLES:?}")]
    UnknownVariable(String),
}

/// The variables an admission expression may read.
pub const VARIABLES: [&str; 6] = [
    "object",
    "oldObject",
    "request",
    "params",
    "namespaceObject",
    "variables",
];

/// Functions and methods every expression may call, beside operators: the CEL standard
/// library and optional types, the strings and lists extensions, and the Kubernetes regex and
/// list functions registered below. Namespaced functions (`strings.quote`, `optional.of`,
/// `lists.range`) are listed by their last part, as the compiled program names them.
const SUPPORTED: &[&str] = &[
    // standard library
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "bool",
    "type",
    "dyn",
    "duration",
    "timestamp",
    "getFullYear",
    "getMonth",
    "getDayOfYear",
    "getDayOfMonth",
    "getDate",
    "getDayOfWeek",
    "getHours",
    "getMinutes",
    "getSeconds",
    "getMilliseconds",
    // optional types
    "orValue",
    "hasValue",
    "value",
    "or",
    "of",
    "none",
    "ofNonZeroValue",
    // strings extension
    "charAt",
    "indexOf",
    "lastIndexOf",
    "join",
    "lowerAscii",
    "upperAscii",
    "trim",
    "replace",
    "split",
    "substring",
    "format",
    "quote",
    "reverse",
    // lists extension
    "distinct",
    "flatten",
    "range",
    "slice",
    "sort",
    // Kubernetes: regex and list libraries
    "find",
    "findAll",
    "isSorted",
    "sum",
    "min",
    "max",
];

/// The environment, and a root context holding the functions registered on contexts; each
/// evaluation binds its variables in a child scope of it.
struct Engine {
    env: Arc<Env>,
    root: Context<'static, 'static>,
}

static ENGINE: LazyLock<Engine> = LazyLock::new(|| {
    let mut env = Env::stdlib();
    env.add_extension(cel::extensions::strings)
        .expect("the strings extension registers once");
    env.add_extension(cel::extensions::lists)
        .expect("the lists extension registers once");
    // cel-go (so kube-apiserver and Kyverno) returns the receiver of `orValue` and `or` as it
    // is when it is not an optional: `x.requests.orValue({})` is `x.requests`, and policies
    // rely on it. The crate's overloads fail there, so both calls are rewritten at compile
    // time to functions that accept either.
    for (function, lenient) in [("orValue", OR_VALUE), ("or", OR)] {
        env.add_macro(cel::parser::Macro::receiver(
            function,
            1,
            move |helper, target, args| {
                let target = target.take().expect("a receiver macro has a target");
                let default = args.pop().expect("the macro matched one argument");
                Ok(Some(helper.next_expr(cel::common::ast::Expr::Call(
                    cel::common::ast::CallExpr {
                        func_name: lenient.to_owned(),
                        target: None,
                        args: vec![target, default],
                    },
                ))))
            },
        ))
        .expect("orValue and or are not macros yet");
        env.add_overload(
            lenient,
            lenient,
            vec![cel::common::types::DYN_TYPE, cel::common::types::DYN_TYPE],
            if function == "or" {
                lenient_or
            } else {
                lenient_or_value
            },
        )
        .expect("declared once");
    }
    let env = Arc::new(env);
    let mut root = Context::with_env(env.clone());
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
    Engine { env, root }
});

/// Compiles `source`, refusing syntax errors, calls to functions this build does not provide,
/// and variables an admission expression does not have.
pub fn compile(source: &str) -> Result<Expression, CompileError> {
    let program = ENGINE
        .env
        .compile(source)
        .map_err(|e| CompileError::Syntax(e.to_string().trim().to_owned()))?;
    let references = program.references();
    // Comprehension variables are listed too; only the free ones must be known.
    let bound = comprehension_variables(source);
    for variable in references.variables() {
        let namespace = ["strings", "optional", "lists"].contains(&variable);
        if !VARIABLES.contains(&variable) && !bound.contains(variable) && !namespace {
            return Err(CompileError::UnknownVariable(variable.to_owned()));
        }
    }
    let mut unsupported: Vec<&str> = references
        .functions()
        .into_iter()
        .filter(|f| {
            let operator = ['_', '@', '!', '-'].iter().any(|c| f.starts_with(*c));
            !operator && !SUPPORTED.contains(f)
        })
        .collect();
    if !unsupported.is_empty() {
        unsupported.sort_unstable();
        return Err(CompileError::Unsupported(unsupported.join("(), ")));
    }
    Ok(Expression {
        source: source.to_owned(),
        program,
    })
}

/// The names a macro binds (`x` in `list.all(x, ...)`), read from the source: the cel crate
/// lists them among the variables.
fn comprehension_variables(source: &str) -> BTreeSet<&str> {
    let macros = [
        ".all(",
        ".exists(",
        ".exists_one(",
        ".existsOne(",
        ".map(",
        ".filter(",
        ".sortBy(",
    ];
    let mut out = BTreeSet::new();
    for m in macros {
        for (at, _) in source.match_indices(m) {
            let rest = &source[at + m.len()..];
            if let Some((name, _)) = rest.split_once(',') {
                let name = name.trim();
                if !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                    out.insert(name);
                }
            }
        }
    }
    out
}

/// What an admission expression reads, as JSON.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bindings<'a> {
    pub object: Option<&'a serde_json::Value>,
    pub old_object: Option<&'a serde_json::Value>,
    pub request: Option<&'a serde_json::Value>,
    pub namespace_object: Option<&'a serde_json::Value>,
}

/// The variables of one request, converted to CEL values once and read by every expression
/// that judges it. Absent ones are null, as the apiserver binds them.
pub struct Activation {
    scope: Context<'static, 'static>,
}

impl Activation {
    pub fn new(bindings: Bindings) -> Self {
        let mut scope = ENGINE.root.new_inner_scope();
        for (name, json) in [
            ("object", bindings.object),
            ("oldObject", bindings.old_object),
            ("request", bindings.request),
            ("namespaceObject", bindings.namespace_object),
        ] {
            scope.add_variable_from_value(name, json.map_or(Value::Null, value));
        }
        scope.add_variable_from_value("params", Value::Null);
        scope.add_variable_from_value("variables", empty_map());
        Self { scope }
    }

    pub fn evaluate(&self, expr: &Expression) -> Result<Value, String> {
        expr.program.execute(&self.scope).map_err(|e| e.to_string())
    }

    /// A scope over this activation with `variables` bound.
    pub fn with_variables(
        &self,
        variables: &std::collections::HashMap<String, Value>,
    ) -> Scope<'_> {
        let mut scope = self.scope.new_inner_scope();
        scope.add_variable_from_value("variables", Value::from(variables.clone()));
        Scope { scope }
    }
}

/// An activation with a rule's `variables` bound.
pub struct Scope<'a> {
    scope: Context<'a, 'static>,
}

impl Scope<'_> {
    pub fn evaluate(&self, expr: &Expression) -> Result<Value, String> {
        expr.program.execute(&self.scope).map_err(|e| e.to_string())
    }
}

fn empty_map() -> Value {
    Value::from(std::collections::HashMap::<String, Value>::new())
}

/// A JSON value as CEL sees it.
pub fn value(json: &serde_json::Value) -> Value {
    cel::to_value(json).unwrap_or(Value::Null)
}

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

const OR_VALUE: &str = "@orValue";
const OR: &str = "@or";

type Args<'b, 'v> = Vec<cel::common::value::CowVal<'b, 'v>>;
type Returned<'b, 'v> = Result<cel::common::value::CowVal<'b, 'v>, cel::ExecutionError>;

/// `opt.orValue(default)`: the optional's value, else the default; a value that is not an
/// optional is returned as it is, as cel-go does.
fn lenient_or_value<'b, 'v>(mut args: Args<'b, 'v>) -> Returned<'b, 'v> {
    use cel::common::types::CelOptional;
    let default = args.pop().expect("two arguments");
    let this = args.pop().expect("two arguments");
    let Some(optional) = this.downcast_ref::<CelOptional>() else {
        return Ok(this);
    };
    Ok(match optional.option() {
        Some(value) => value.clone_as_boxed().into(),
        None => default,
    })
}

/// `opt.or(other)`: the optional if it has a value, else the other; a value that is not an
/// optional is returned as it is, as cel-go does.
fn lenient_or<'b, 'v>(mut args: Args<'b, 'v>) -> Returned<'b, 'v> {
    use cel::common::types::CelOptional;
    let other = args.pop().expect("two arguments");
    let this = args.pop().expect("two arguments");
    match this.downcast_ref::<CelOptional>() {
        Some(optional) if optional.option().is_none() => Ok(other),
        _ => Ok(this),
    }
}
