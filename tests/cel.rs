//! The CEL library portcullis provides, checked against the examples of the Kubernetes CEL
//! documentation (kubernetes.io, "Common Expression Language in Kubernetes": the regex, list
//! and strings libraries and optional types), and what it refuses at load.

use portcullis::cel::{self, Activation, Bindings, CompileError};
use serde_json::json;

fn eval(source: &str) -> Result<cel::Value, String> {
    let expr = cel::compile(source).unwrap_or_else(|e| panic!("{source}: {e}"));
    let object = json!({
        "metadata": {"name": "web", "labels": {"team": "a"}},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}
    });
    Activation::new(Bindings {
        object: Some(&object),
        ..Bindings::default()
    })
    .evaluate(&expr)
}

fn is_true(source: &str) {
    assert_eq!(eval(source), Ok(cel::Value::Bool(true)), "{source}");
}

#[test]
fn kubernetes_documentation_examples_evaluate_as_documented() {
    for source in [
        // Regex library.
        "'abc 123 def 123'.find('[0-9]+') == '123'",
        "'abc 123 def 123'.findAll('[0-9]+') == ['123', '123']",
        "'abc'.find('[0-9]+') == ''",
        "'k8s.io'.matches('^[a-z0-9.]+$')",
        // List library.
        "[1, 2, 3].isSorted()",
        "['a', 'b', 'b', 'c'].isSorted()",
        "![2.0, 1.0].isSorted()",
        "[1, 2, 3].sum() == 6",
        "[1.0, 2.0, 3.0].sum() == 6.0",
        "[].sum() == 0",
        "[1, 3, 2].max() == 3",
        "[1, 3, 2].min() == 1",
        "[1, 2, 3, 4].slice(1, 3) == [2, 3]",
        "[[1], [2, 3]].flatten() == [1, 2, 3]",
        "[1, 2, 2, 3].distinct() == [1, 2, 3]",
        // Strings library.
        "'hello mellow'.charAt(4) == 'o'",
        "'hello mellow'.indexOf('ello') == 1",
        "'hello mellow'.lastIndexOf('ello') == 7",
        "'TacoCat'.lowerAscii() == 'tacocat'",
        "'TacoCat'.upperAscii() == 'TACOCAT'",
        "'hello hello'.replace('he', 'we') == 'wello wello'",
        "'hello hello'.split(' ') == ['hello', 'hello']",
        "'tacocat'.substring(4) == 'cat'",
        "'tacocat'.substring(0, 4) == 'taco'",
        "'  \\ttrim\\n    '.trim() == 'trim'",
        "['hello', 'mellow'].join(' ') == 'hello mellow'",
        "'this is a string: %s'.format(['text']) == 'this is a string: text'",
        "strings.quote('single-quote with \"double quote\"') == '\"single-quote with \\\\\"double quote\\\\\"\"'",
        // Optional types.
        "object.metadata.?labels.?team.orValue('none') == 'a'",
        "object.metadata.?labels.?owner.orValue('none') == 'none'",
        "!object.spec.?securityContext.hasValue()",
        "optional.of(1).hasValue() && !optional.none().hasValue()",
        "object.spec.containers[?0].?name.orValue('') == 'app'",
        // As in cel-go: orValue on a value that is not an optional is that value.
        "object.metadata.labels.orValue({}).team == 'a'",
        "object.spec.containers.orValue([]).size() == 1",
        // Macros over an admission object.
        "object.spec.containers.all(c, c.image.contains(':'))",
        "object.spec.containers.exists(c, c.name == 'app')",
        "object.spec.containers.map(c, c.name) == ['app']",
        "object.spec.containers.filter(c, c.image.startsWith('busybox')).size() == 0",
        "has(object.metadata.labels) && !has(object.metadata.annotations)",
        "duration('1h') > duration('59m')",
    ] {
        is_true(source);
    }
}

#[test]
fn runtime_errors_are_errors_not_false() {
    // A missing key is an error, which failurePolicy then decides; never a silent false.
    let err = eval("object.spec.hostNetwork == false").unwrap_err();
    assert!(err.contains("hostNetwork"), "{err}");
    assert!(eval("'abc'.find('[')").is_err());
    assert!(eval("['a', 1].isSorted()").is_err());
    assert!(eval("[].max()").is_err());
}

#[test]
fn what_this_build_does_not_provide_is_refused_at_load() {
    for (source, expected) in [
        (
            "authorizer.group('apps').resource('deployments').check('create').allowed()",
            CompileError::UnknownVariable("authorizer".into()),
        ),
        (
            "url('https://example.com').getHost() == 'example.com'",
            CompileError::Unsupported("getHost(), url".into()),
        ),
        (
            "quantity('1Gi').isGreaterThan(quantity('1Mi'))",
            CompileError::Unsupported("isGreaterThan(), quantity".into()),
        ),
        (
            "objekt.spec",
            CompileError::UnknownVariable("objekt".into()),
        ),
    ] {
        assert_eq!(cel::compile(source).unwrap_err(), expected, "{source}");
    }
    let syntax = cel::compile("object.spec.containers.all(c, ").unwrap_err();
    assert!(matches!(syntax, CompileError::Syntax(_)), "{syntax:?}");
}
