//! CEL as Kubernetes offers it to ValidatingAdmissionPolicies: the cel crate's standard
//! library, macros and optional types, its strings and lists extensions, and the Kubernetes
//! library functions written here. Expressions are compiled once, when a policy is loaded, and
//! one that calls anything this build does not provide is refused then, naming the function,
//! rather than failing on some later request.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};

pub use cel::Value;
use cel::common::ast::{CallExpr, Expr, IdedExpr, LiteralValue, operators};
use cel::common::types::{CelList, CelMap, CelNull, CelString};
use cel::common::value::CowVal;
use cel::{Context, Env};

mod comprehensions;
mod json;
mod kubernetes;

/// A compiled expression and the text it came from.
pub struct Expression {
    pub source: String,
    /// The compiled program's expression, prepared for evaluation (see [`prepare`]).
    expression: cel::parser::Expression,
    object_reads: ObjectReads,
    /// Set when the expression reads neither `params` nor `variables`, so that its value is
    /// the same in every rule of a request that writes it: the compiled tree, written out, as a
    /// [`Memo`] knows it. Spacing, parentheses and comments leave no trace in the tree (the
    /// parser numbers the nodes of equal trees alike), so the spellings of one expression in
    /// different policies share a value. Written out, because comparing the text is faster
    /// than comparing the trees (BENCHMARKS.md, "Session 12").
    memo_key: Option<Arc<str>>,
}

impl std::fmt::Debug for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Expression").field(&self.source).finish()
    }
}

impl Expression {
    /// What of the request's `object` this expression may read beside the rest.
    pub fn object_reads(&self) -> ObjectReads {
        self.object_reads
    }
}

/// The two parts of a request's object that can be left out of the JSON expressions read
/// when no loaded expression reads them: `status`, and `metadata.managedFields`, which the
/// apiserver adds to every object it sends and which is most of a Pod's JSON tree (BENCHMARKS.md,
/// "Session 10"). Built but never read, it cost more than several rules together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObjectReads {
    pub status: bool,
    pub managed_fields: bool,
}

impl ObjectReads {
    /// The whole object.
    pub const ALL: Self = Self {
        status: true,
        managed_fields: true,
    };

    pub fn union(self, other: Self) -> Self {
        Self {
            status: self.status || other.status,
            managed_fields: self.managed_fields || other.managed_fields,
        }
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

/// Functions and methods every expression may call, beside operators and what
/// `kubernetes::FUNCTIONS` and `comprehensions::FUNCTIONS` add: the CEL standard library and
/// optional types, the strings and lists extensions (without `lists.range`), and the
/// Kubernetes regex and list functions. Namespaced functions (`strings.quote`, `optional.of`)
/// are listed by their last part, as the compiled program names them.
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
    kubernetes::register(&mut env).expect("the Kubernetes libraries register once");
    comprehensions::register(&mut env).expect("the two-variable comprehensions register once");
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
    kubernetes::register_functions(&mut root);
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
        let namespace = ["strings", "optional", "lists"].contains(&variable)
            || kubernetes::NAMESPACES.contains(&variable)
            || variable.starts_with('@');
        if !VARIABLES.contains(&variable) && !bound.contains(variable) && !namespace {
            return Err(CompileError::UnknownVariable(variable.to_owned()));
        }
    }
    let mut unsupported: Vec<&str> = references
        .functions()
        .into_iter()
        .filter(|f| {
            let operator = ['_', '@', '!', '-'].iter().any(|c| f.starts_with(*c));
            !operator
                && !SUPPORTED.contains(f)
                && !kubernetes::FUNCTIONS.contains(f)
                && !comprehensions::FUNCTIONS.contains(f)
        })
        .collect();
    if !unsupported.is_empty() {
        unsupported.sort_unstable();
        return Err(CompileError::Unsupported(unsupported.join("(), ")));
    }
    let request_only = !references.has_variable("params") && !references.has_variable("variables");
    let mut object_reads = ObjectReads::default();
    let mut expression = program.expression().clone();
    prepare(&mut expression, &mut Vec::new(), &mut object_reads, false);
    let memo_key = request_only.then(|| format!("{expression:?}").into());
    Ok(Expression {
        source: source.to_owned(),
        expression,
        object_reads,
        memo_key,
    })
}

/// Prepares a compiled expression for evaluation, in one walk over it:
///
/// - It adds to `reads` what the expression may read of `object`. Every place that names
///   `object` is either a chain of field selections and literal indexes on it
///   (`object.metadata.labels`, `has(object.status)`, `object.?status`, `object['status']`),
///   which says which fields it reaches, or any other use (iterated, compared, passed to a
///   function, indexed by a computed key), which may read all of it. Only a whole chain counts
///   (`in_chain`: `expr` is part of a longer one). A comprehension variable called `object`
///   is counted as the request's object: that can only count too much.
/// - It rewrites every field selection on a variable (`object.spec`, `c.image` with `c` bound
///   by a comprehension; `bound` holds those in scope) to select on the variable's value:
///   `(true ? object : object).spec`. The interpreter reads a chain of selections rooted at a
///   name as a qualified name, which it joins and looks up prefix by prefix in every scope (a
///   variable may be called `a.b`, a type `a.b.c`) before it selects a field. No admission
///   variable or comprehension variable has a dot in its name, so that search always ends at
///   the variable itself; the conditional is the cheapest expression the interpreter does not
///   read as a name, and the selection keeps its own semantics and errors (optional chaining,
///   `has()`, no such key).
fn prepare(expr: &mut IdedExpr, bound: &mut Vec<String>, reads: &mut ObjectReads, in_chain: bool) {
    let path = object_path(expr);
    if let Some(path) = &path
        && !in_chain
    {
        let (first, second) = (path.first().copied(), path.get(1).copied());
        reads.status |= first.is_none_or(|f| f == "status");
        reads.managed_fields |= match first {
            None => true,
            Some("metadata") => second.is_none_or(|f| f == "managedFields"),
            Some(_) => false,
        };
    }
    let in_chain = path.is_some();
    let mut visit = |e: &mut IdedExpr, bound: &mut Vec<String>| prepare(e, bound, reads, in_chain);
    match &mut expr.expr {
        Expr::Select(select) => match &select.operand.expr {
            Expr::Ident(name) if VARIABLES.contains(&name.as_str()) || bound.contains(name) => {
                let ident = || IdedExpr {
                    id: select.operand.id,
                    expr: Expr::Ident(name.clone()),
                };
                let value = Expr::Call(CallExpr {
                    func_name: operators::CONDITIONAL.to_owned(),
                    target: None,
                    args: vec![
                        IdedExpr {
                            id: select.operand.id,
                            expr: Expr::Literal(LiteralValue::Boolean(true.into())),
                        },
                        ident(),
                        ident(),
                    ],
                });
                select.operand.expr = value;
            }
            _ => visit(&mut select.operand, bound),
        },
        Expr::Call(call) => {
            if let Some(target) = &mut call.target {
                visit(target, bound);
            }
            for arg in &mut call.args {
                visit(arg, bound);
            }
        }
        Expr::Comprehension(c) => {
            visit(&mut c.iter_range, bound);
            visit(&mut c.accu_init, bound);
            let depth = bound.len();
            bound.extend(
                [Some(&c.iter_var), c.iter_var2.as_ref(), Some(&c.accu_var)]
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
            for part in [&mut c.loop_cond, &mut c.loop_step, &mut c.result] {
                visit(part, bound);
            }
            bound.truncate(depth);
        }
        Expr::List(list) => {
            for element in &mut list.elements {
                visit(element, bound);
            }
        }
        Expr::Map(map) => {
            for entry in &mut map.entries {
                if let cel::common::ast::EntryExpr::MapEntry(e) = &mut entry.expr {
                    visit(&mut e.key, bound);
                    visit(&mut e.value, bound);
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &mut s.entries {
                if let cel::common::ast::EntryExpr::StructField(f) = &mut entry.expr {
                    visit(&mut f.value, bound);
                }
            }
        }
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// The fields `expr` reaches from `object`, outermost first, when it is `object` or a chain
/// of field selections (presence tests included) and literal indexes on it.
fn object_path(expr: &IdedExpr) -> Option<Vec<&str>> {
    let mut path = Vec::new();
    let mut expr = expr;
    loop {
        match &expr.expr {
            Expr::Ident(name) if name == "object" => {
                path.reverse();
                return Some(path);
            }
            Expr::Select(select) => {
                path.push(select.field.as_str());
                expr = &select.operand;
            }
            Expr::Call(call)
                if call.target.is_none()
                    && call.args.len() == 2
                    && [
                        operators::INDEX,
                        operators::OPT_INDEX,
                        operators::OPT_SELECT,
                    ]
                    .contains(&call.func_name.as_str()) =>
            {
                let Expr::Literal(LiteralValue::String(key)) = &call.args[1].expr else {
                    return None;
                };
                path.push(key.inner());
                expr = &call.args[0];
            }
            _ => return None,
        }
    }
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

/// What an admission expression reads. The object is read where it lies (see `cel/json.rs`);
/// `oldObject`, `request` and `namespaceObject` are built only if an expression reads them.
#[derive(Default)]
pub struct Bindings<'a> {
    pub object: Option<&'a serde_json::Value>,
    pub old_object: Option<Build<'a>>,
    pub request: Option<Build<'a>>,
    pub namespace_object: Option<Build<'a>>,
}

/// Builds a variable's JSON the first time an expression reads it, or lends JSON the request
/// already holds.
pub type Build<'a> = Box<dyn Fn() -> Cow<'a, serde_json::Value> + Send + Sync + 'a>;

/// A value an expression produced, which may still read the request's JSON.
pub type Val<'v> = Box<dyn cel::common::value::Val + 'v>;

/// The variables of one request, bound once and read by every expression that judges it.
/// Absent ones are null, as the apiserver binds them. Looked up by name, without the
/// interpreter's maps of variables.
pub struct Activation<'v> {
    object: Val<'v>,
    old_object: Lazy<'v>,
    request: Lazy<'v>,
    namespace_object: Lazy<'v>,
    null: Val<'v>,
    no_variables: Val<'v>,
}

/// A variable's JSON, built on first read and then read in place like the objects.
struct Lazy<'v> {
    build: Option<Build<'v>>,
    json: std::sync::OnceLock<Cow<'v, serde_json::Value>>,
}

impl Lazy<'_> {
    fn get(&self) -> Option<&serde_json::Value> {
        let build = self.build.as_ref()?;
        Some(self.json.get_or_init(build))
    }
}

impl<'v> Activation<'v> {
    pub fn new(bindings: Bindings<'v>) -> Self {
        let bind = |json: Option<&'v serde_json::Value>| -> Val<'v> {
            json.map_or(Box::new(CelNull), json::val)
        };
        let lazy = |build| Lazy {
            build,
            json: std::sync::OnceLock::new(),
        };
        Self {
            object: bind(bindings.object),
            old_object: lazy(bindings.old_object),
            request: lazy(bindings.request),
            namespace_object: lazy(bindings.namespace_object),
            null: Box::new(CelNull),
            no_variables: Box::new(CelMap::default()),
        }
    }

    /// The scope expressions of this request are evaluated in; `memo` keeps the values of
    /// request-only variables for every rule evaluated in it.
    pub fn scope<'m, 'a>(&'a self, memo: Option<&'m Memo<'a>>) -> Scope<'m, 'a> {
        let mut scope = ENGINE.root.new_inner_scope();
        scope.set_variable_resolver(self);
        Scope { scope, memo }
    }

    pub fn evaluate(&self, expr: &Expression) -> Result<Value, String> {
        self.scope(None).evaluate(expr)
    }
}

impl cel::context::VariableResolver for Activation<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let built = |lazy: &'b Lazy<'_>| {
            let val = lazy.get().map(json::val);
            Some(val.map_or(CowVal::Borrowed(self.null.as_ref()), CowVal::Owned))
        };
        let val: &'b (dyn cel::common::value::Val + 'b) = match variable {
            "object" => self.object.as_ref(),
            "oldObject" => return built(&self.old_object),
            "request" => return built(&self.request),
            "namespaceObject" => return built(&self.namespace_object),
            "params" => self.null.as_ref(),
            "variables" => self.no_variables.as_ref(),
            _ => return None,
        };
        Some(CowVal::Borrowed(val))
    }
}

/// Where an expression is evaluated: a request's activation, perhaps with a rule's params or
/// `variables` bound over it.
pub struct Scope<'p, 'v> {
    scope: Context<'p, 'v>,
    memo: Option<&'p Memo<'v>>,
}

/// The values of request-only variable expressions (see [`Expression`]) one activation has
/// evaluated, by their compiled tree. Policies written from one template define the same
/// variables (Kyverno's pod-security policies each build `allContainers`, in three spellings),
/// and each is evaluated once per request instead of once per policy. CEL has no side effects
/// and the cost budget is per expression, so each policy sees the value, or the error, it
/// would have computed.
#[derive(Default)]
pub struct Memo<'v>(RefCell<Vec<(Arc<str>, Evaluated<'v>)>>);

/// A variable's value, or why it has none.
type Evaluated<'v> = Result<Shared<'v>, String>;

impl<'p, 'v> Scope<'p, 'v> {
    /// A scope over this one with `params` bound: the param object, or null.
    pub fn with_params(&self, params: Option<&'v serde_json::Value>) -> Scope<'_, 'v> {
        let mut scope = self.scope.new_inner_scope();
        scope.add_variable_as_val("params", params.map_or(Box::new(CelNull), json::val));
        Scope {
            scope,
            memo: self.memo,
        }
    }

    /// A scope over this one with `variables` bound, by name.
    pub fn with_variables(&self, variables: &Variables<'v>) -> Scope<'_, 'v> {
        let mut scope = self.scope.new_inner_scope();
        scope.add_variable_as_val("variables", Box::new(variables.clone()));
        Scope {
            scope,
            memo: self.memo,
        }
    }

    /// A rule's variable, seeing the `earlier` ones; a request-only one is taken from the
    /// memo when another rule of this request has evaluated it.
    pub fn variable(&self, expr: &Expression, earlier: &Variables<'v>) -> Evaluated<'v> {
        let (Some(memo), Some(key)) = (self.memo, &expr.memo_key) else {
            if earlier.is_empty() {
                return self.evaluate_val(expr).map(Arc::from);
            }
            return self
                .with_variables(earlier)
                .evaluate_val(expr)
                .map(Arc::from);
        };
        if let Some((_, value)) = memo.0.borrow().iter().find(|(k, _)| k == key) {
            return value.clone();
        }
        let value = self.evaluate_val(expr).map(Arc::from);
        memo.0.borrow_mut().push((key.clone(), value.clone()));
        value
    }

    pub fn evaluate(&self, expr: &Expression) -> Result<Value, String> {
        json::reset_budget();
        let val = Value::resolve_val(&expr.expression, &self.scope).map_err(|e| e.to_string())?;
        to_value(val.as_ref()).map_err(|e| e.to_string())
    }

    /// The value itself, kept as it is for a variable later expressions read.
    pub fn evaluate_val(&self, expr: &Expression) -> Result<Val<'v>, String> {
        json::reset_budget();
        Value::resolve_val(&expr.expression, &self.scope)
            .map(CowVal::into_owned)
            .map_err(|e| e.to_string())
    }
}

/// A variable's value, shared by the scopes that read it rather than copied into each.
pub type Shared<'v> = Arc<dyn cel::common::value::Val + 'v>;

/// A rule's `variables` evaluated so far, each read at the cost of its size, like the
/// request's own lists: a variable holding a list is as costly to loop over as the list it
/// came from.
#[derive(Debug, Clone, Default)]
pub struct Variables<'v>(Arc<Vec<(String, Shared<'v>)>>);

impl<'v> Variables<'v> {
    pub fn push(&mut self, name: &str, value: Shared<'v>) {
        Arc::make_mut(&mut self.0).push((name.to_owned(), value));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'v> cel::common::value::Val for Variables<'v> {
    fn get_type(&self) -> &cel::common::types::Type {
        &cel::common::types::MAP_TYPE
    }

    fn cel_type() -> &'static cel::common::types::Type {
        &cel::common::types::MAP_TYPE
    }

    fn as_indexer<'b, 'w>(&'b self) -> Option<&'b (dyn cel::common::traits::Indexer + 'w)>
    where
        Self: 'w,
    {
        Some(self)
    }

    fn clone_as_boxed<'w>(&self) -> Box<dyn cel::common::value::Val + 'w>
    where
        Self: 'w,
    {
        Box::new(self.clone())
    }
}

impl<'v> cel::common::traits::Indexer for Variables<'v> {
    fn get<'b, 'w>(
        &'b self,
        key: &dyn cel::common::value::Val,
    ) -> Result<CowVal<'b, 'w>, cel::ExecutionError>
    where
        Self: 'w,
    {
        let name = key.downcast_ref::<CelString>().map(CelString::inner);
        let Some((_, value)) = self.0.iter().find(|(n, _)| Some(n.as_str()) == name) else {
            return Err(cel::ExecutionError::no_such_key(name.unwrap_or("?")));
        };
        let size = value.as_sizer().map_or(0, |s| *s.size().inner() as u64);
        json::charge(1 + size)?;
        Ok(CowVal::Borrowed(&**value))
    }

    fn steal<'w>(
        self: Box<Self>,
        key: &dyn cel::common::value::Val,
    ) -> Result<Box<dyn cel::common::value::Val + 'w>, cel::ExecutionError>
    where
        Self: 'w,
    {
        self.get(key).map(CowVal::into_owned)
    }
}

/// A result as the crate's owned value; a JSON object read in place is copied only here.
fn to_value(val: &(dyn cel::common::value::Val + '_)) -> Result<Value, cel::ExecutionError> {
    use cel::common::types::Kind;
    match val.get_type().kind() {
        Kind::List if val.downcast_ref::<CelList>().is_some() => {
            let list = val.downcast_ref::<CelList>().expect("checked");
            let items = list.inner().iter().map(|v| to_value(v.as_ref()));
            Ok(Value::List(Arc::new(items.collect::<Result<_, _>>()?)))
        }
        Kind::Map if val.downcast_ref::<CelMap>().is_none() => {
            let (Some(keys), Some(index)) = (val.as_iterable(), val.as_indexer()) else {
                return Value::try_from(val);
            };
            let mut entries = std::collections::HashMap::new();
            let mut keys = keys.iter();
            while let Some(key) = keys.next() {
                let value = to_value(index.get(key)?.as_ref())?;
                let Value::String(key) = to_value(key)? else {
                    return Value::try_from(val);
                };
                entries.insert(cel::objects::Key::String(key), value);
            }
            Ok(Value::Map(entries.into()))
        }
        _ => Value::try_from(val),
    }
}

const OR_VALUE: &str = "@orValue";
const OR: &str = "@or";

type Args<'b, 'v> = Vec<CowVal<'b, 'v>>;
type Returned<'b, 'v> = Result<CowVal<'b, 'v>, cel::ExecutionError>;

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

#[cfg(test)]
mod tests {
    use super::{Activation, Bindings, ENGINE, compile, to_value};
    use std::collections::BTreeSet;

    /// Only `status` and `metadata.managedFields` can be left out, and only when no place that
    /// names `object` can reach them.
    #[test]
    fn what_an_expression_reads_of_the_object() {
        use super::ObjectReads;
        let none = ObjectReads::default();
        let status = ObjectReads {
            status: true,
            ..none
        };
        let managed = ObjectReads {
            managed_fields: true,
            ..none
        };
        let cases = [
            ("object.spec.containers.all(c, c.image != '')", none),
            (
                "object.metadata.labels.app == 'web' && has(object.spec.nodeName)",
                none,
            ),
            ("object.?metadata.?annotations['a'].orValue('') == ''", none),
            (
                "oldObject.status.phase == 'Running' && params.metadata.managedFields.size() > 0",
                none,
            ),
            ("has(object.status)", status),
            ("object.?status.?phase.orValue('') == ''", status),
            ("object[?'status'].hasValue()", status),
            ("object.metadata.managedFields.size() > 0", managed),
            ("has(object.metadata.managedFields)", managed),
            ("variables.m.name == '' && object.metadata != null", managed),
            ("object.metadata['managedFields'] != null", managed),
            ("object.metadata[request.name] != null", managed),
            ("object == oldObject", ObjectReads::ALL),
            ("'status' in object", ObjectReads::ALL),
            ("object.all(k, k != 'status')", ObjectReads::ALL),
            ("object[request.name] != null", ObjectReads::ALL),
            ("[object][0].spec != null", ObjectReads::ALL),
        ];
        for (source, reads) in cases {
            let compiled = compile(source).unwrap_or_else(|e| panic!("{source}: {e}"));
            assert_eq!(compiled.object_reads(), reads, "{source}");
        }
    }

    /// Selections on variables read the variable's value directly (`prepare`):
    /// every result and every error is the one the interpreter gives the expression as it
    /// was compiled, which looks the same names up as qualified names.
    #[test]
    fn selections_on_variables_mean_what_they_meant_as_qualified_names() {
        let object = serde_json::json!({
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"containers": [
                {"name": "a", "image": "nginx:latest", "securityContext": {"privileged": true}},
                {"name": "b", "image": "busybox", "ports": [{"containerPort": 80}]}
            ]}
        });
        let activation = Activation::new(Bindings {
            object: Some(&object),
            ..Bindings::default()
        });
        let expressions = [
            "object.spec.containers[0].image",
            "object.metadata.labels.app == 'web'",
            "object.spec.nodeName",
            "object.metadata.name.size",
            "object.spec.containers.all(c, c.securityContext.privileged)",
            "object.spec.containers.exists(c, c.?securityContext.?privileged.orValue(false))",
            "object.spec.containers.map(c, c.image)",
            "object.spec.containers.map(c, c.ports.map(p, p.containerPort))",
            "object.spec.containers.all(c, has(c.ports) || c.name == 'a')",
            "object.spec.containers.all(c, c.name.first)",
            "has(object.spec) && !has(object.status) && has(object.metadata.labels.app)",
            "has(oldObject.spec)",
            "oldObject.spec",
            "oldObject.?spec.orValue('none')",
            "params.spec",
            "request.uid",
            "namespaceObject.metadata.name",
            "variables.missing",
            "object.?spec.containers[0].name",
            "object.spec.containers[0].?securityContext.privileged",
            "[1, 2].exists(x, x.y)",
            "{'a': {'b': 1}}.a.b",
            "object.spec.containers.exists(object, object.name == 'b')",
        ];
        let mut rewritten = 0;
        for source in expressions {
            let compiled = compile(source).unwrap_or_else(|e| panic!("{source}: {e}"));
            let program = ENGINE.env.compile(source).expect("compiles");
            let scope = activation.scope(None);
            let as_compiled = cel::Value::resolve_val(program.expression(), &scope.scope)
                .map_err(|e| e.to_string())
                .and_then(|v| to_value(v.as_ref()).map_err(|e| e.to_string()));
            rewritten += usize::from(compiled.expression != *program.expression());
            assert_eq!(scope.evaluate(&compiled), as_compiled, "{source}");
        }
        // All but the three that select on no variable: on a literal, or after `.?`, which is
        // a call.
        assert_eq!(rewritten, expressions.len() - 3);
    }

    #[test]
    fn spellings_of_one_expression_share_a_memo_key_and_other_expressions_do_not() {
        let key = |source: &str| compile(source).expect(source).memo_key;
        // As Kyverno's pod-security policies spell `allContainers`.
        let one = key("object.spec.containers + object.spec.?initContainers.orValue([])");
        assert!(one.is_some());
        for spelling in [
            "object.spec.containers +\n  object.spec.?initContainers.orValue([])\n",
            "(object.spec.containers + object.spec.?initContainers.orValue([]))",
            "object.spec.containers + (object.spec.?initContainers.orValue([]))",
            "object.spec.containers // the app's\n + object.spec.?initContainers.orValue([])",
        ] {
            assert_eq!(key(spelling), one, "{spelling}");
        }
        // A literal is its value, however it is written.
        assert_eq!(key("object.x == r'a\\b'"), key("object.x == 'a\\\\b'"));
        // Any other tree gives another key: a literal's spacing, type or value, a field, a
        // presence test, optional selection, grouping, a map's entries; a comprehension's
        // variable's name too, which costs only a second evaluation.
        let others = [
            "object.x == 'a  b'",
            "object.x == 'a b'",
            "object.x == 1",
            "object.x == 1u",
            "object.x == 1.0",
            "object.x == b'1'",
            "object.y == 1",
            "object.?x == 1",
            "has(object.x)",
            "(object.a + object.b) + object.c",
            "object.a + (object.b + object.c)",
            "{'a': 1, 'b': 2} == object.m",
            "{'a': 2, 'b': 1} == object.m",
            "object.spec.containers.all(c, c.name == 'a')",
            "object.spec.containers.all(d, d.name == 'a')",
        ];
        let keys: BTreeSet<_> = others.iter().map(|source| key(source)).collect();
        assert_eq!(keys.len(), others.len(), "{keys:#?}");
        // What reads a policy's params or variables is that policy's alone.
        assert_eq!(key("params.x == object.x"), None);
        assert_eq!(key("variables.x == object.x"), None);
    }
}
