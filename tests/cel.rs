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

/// The quantity, semver, ip, cidr, url, sets and lists libraries, with the examples of the
/// Kubernetes CEL documentation's tables.
#[test]
fn kubernetes_libraries_evaluate_as_documented() {
    for source in [
        // Lists library.
        "[1, 2, 2, 3].indexOf(2) == 1",
        "['a', 'b', 'b', 'c'].lastIndexOf('b') == 2",
        "[1, 2].indexOf(5) == -1",
        "object.spec.containers.map(c, c.name).indexOf('app') == 0",
        // Sets library.
        "sets.contains([1, 2, 3, 4], [2, 3])",
        "!sets.contains([1, 2], [3])",
        "sets.equivalent([1, 2, 3], [3, 2, 1])",
        "!sets.equivalent([1, 2], [1, 2, 3])",
        "sets.intersects([1, 2], [2, 3])",
        "!sets.intersects([1], [2])",
        // Quantity library.
        "quantity('500000G').isInteger()",
        "quantity('50k').asInteger() == 50000",
        "quantity('50k').asApproximateFloat() == 50000.0",
        "quantity('50k').add(20) == quantity('50020')",
        "quantity('50k').sub(20) == quantity('49980')",
        "quantity('50k').add(quantity('20k')) == quantity('70k')",
        "quantity('50k').sub(quantity('20k')) == quantity('30k')",
        "quantity('200M').compareTo(quantity('0.2G')) == 0",
        "!quantity('50M').isGreaterThan(quantity('50Mi'))",
        "quantity('50Mi').isGreaterThan(quantity('50M'))",
        "quantity('50M').isLessThan(quantity('100M'))",
        "quantity('-50M').sign() == -1",
        "quantity('1') == quantity('1000m')",
        "!quantity('1.5').isInteger()",
        "isQuantity('1.3G') && isQuantity('1.3Gi') && !isQuantity('1.3Gii')",
        // Semver library.
        "isSemver('1.0.0') && !isSemver('1.0') && !isSemver('v1.0.0')",
        "isSemver('v1.0', true) && semver('v1.0', true) == semver('1.0.0')",
        "semver('1.2.3').major() == 1 && semver('1.2.3').minor() == 2 && semver('1.2.3').patch() == 3",
        "semver('1.0.0').isLessThan(semver('1.1.0'))",
        "semver('2.0.0').isGreaterThan(semver('1.9.9'))",
        "semver('1.0.0-alpha').isLessThan(semver('1.0.0'))",
        "semver('1.0.0-alpha.1').isLessThan(semver('1.0.0-beta'))",
        "semver('1.0.0').compareTo(semver('1.0.0+build.5')) == 0",
        "semver('1.0.0').compareTo(semver('1.1.0')) == -1",
        // IP and CIDR libraries.
        "isIP('127.0.0.1') && isIP('::1') && !isIP('127.0.0.256') && !isIP('::ffff:1.2.3.4')",
        "ip('127.0.0.1').family() == 4 && ip('::1').family() == 6",
        "ip('127.0.0.1').isLoopback() && ip('::1').isLoopback()",
        "ip('0.0.0.0').isUnspecified() && ip('::').isUnspecified()",
        "ip('224.0.0.1').isLinkLocalMulticast() && ip('ff02::1').isLinkLocalMulticast()",
        "ip('169.254.169.254').isLinkLocalUnicast() && ip('fe80::1').isLinkLocalUnicast()",
        "ip('192.168.0.1').isGlobalUnicast() && !ip('255.255.255.255').isGlobalUnicast()",
        "ip.isCanonical('127.0.0.1') && ip.isCanonical('2001:db8::1')",
        "!ip.isCanonical('2001:db8:0:0:0:0:0:1')",
        "string(ip('127.0.0.1')) == '127.0.0.1' && ip('::1') == ip('0:0:0:0:0:0:0:1')",
        "isCIDR('192.168.0.0/24') && !isCIDR('192.168.0.0') && !isCIDR('192.168.0.0/33')",
        "cidr('192.168.0.0/24').containsIP(ip('192.168.0.1'))",
        "cidr('192.168.0.0/24').containsIP('192.168.0.1')",
        "!cidr('192.168.0.0/24').containsIP('192.168.1.1')",
        "cidr('192.168.0.0/24').containsCIDR('192.168.0.0/25')",
        "!cidr('192.168.0.0/24').containsCIDR(cidr('192.168.0.0/16'))",
        "cidr('192.168.0.1/24').masked() == cidr('192.168.0.0/24')",
        "cidr('192.168.0.0/24').prefixLength() == 24",
        "cidr('192.168.0.0/24').ip() == ip('192.168.0.0')",
        "string(cidr('2001:db8::/32')) == '2001:db8::/32'",
        // URL library.
        "url('https://example.com:80/').getHost() == 'example.com:80'",
        "url('https://example.com/path').getHostname() == 'example.com'",
        "url('https://[::1]:80/').getHostname() == '::1'",
        "url('https://[::1]:80/').getPort() == '80'",
        "url('https://example.com/').getPort() == ''",
        "url('https://example.com/path').getScheme() == 'https'",
        "url('/absolute-path').getScheme() == ''",
        "url('https://example.com/path with spaces/').getEscapedPath() == '/path%20with%20spaces/'",
        "url('https://example.com/path?k1=a&k2=b&k2=c').getQuery() == {'k1': ['a'], 'k2': ['b', 'c']}",
        "isURL('https://example.com/path') && isURL('/absolute-path') && !isURL('relative')",
        // Two-variable comprehensions.
        "[1, 2, 3].all(i, v, i < v)",
        "!([1, 0].all(i, v, i < v))",
        "{'a': 1, 'b': 2}.all(k, v, k.size() == 1 && v > 0)",
        "[1, 2, 3].exists(i, v, i == 1 && v == 2)",
        "[1, 2, 3].existsOne(i, v, v > 2) && ![1, 3, 3].existsOne(i, v, v > 2)",
        "[1, 2, 3].transformList(i, v, i * v) == [0, 2, 6]",
        "[1, 2, 3].transformList(i, v, i > 0, v * 2) == [4, 6]",
        "{'a': 1, 'b': 2}.transformMap(k, v, v + 1) == {'a': 2, 'b': 3}",
        "{'a': 1, 'b': 2}.transformMap(k, v, k == 'a', v * 10) == {'a': 10}",
        "{'a': 'x', 'b': 'y'}.transformMapEntry(k, v, {v: k}) == {'x': 'a', 'y': 'b'}",
        "object.spec.containers.all(i, c, i == 0 && c.name == 'app')",
        "object.metadata.labels.all(k, v, k == 'team' && v == 'a')",
        "object.spec.containers.transformList(i, c, c.name) == ['app']",
        // A nested loop rebinding a name hides the outer one.
        "[1, 2].all(i, v, [5].all(v, v == 5) && v < 3)",
    ] {
        is_true(source);
    }
    // Invalid input to a constructor is a runtime error, which failurePolicy decides.
    for source in [
        "quantity('1x') == quantity('1')",
        "semver('1.0') == semver('1.0.0')",
        "ip('1.2.3') == ip('1.2.3.4')",
        "cidr('1.2.3.4') == cidr('1.2.3.4/32')",
        "url('relative').getHost() == ''",
        "quantity('1.5').asInteger() == 1",
        "{'a': 'x', 'b': 'x'}.transformMapEntry(k, v, {v: k}).size() == 1",
    ] {
        assert!(eval(source).is_err(), "{source} should fail");
    }
}

/// A pathological expression ends with a cost error, which failurePolicy decides, instead of
/// holding a server thread: three loops over 2000 containers inside each other would take
/// 8·10⁹ steps.
#[test]
fn an_expression_that_loops_without_end_runs_out_of_budget() {
    let containers: Vec<_> = (0..2000)
        .map(|i| json!({"name": format!("c{i}"), "image": "nginx:1.27"}))
        .collect();
    let object = json!({"spec": {"containers": containers}});
    let activation = Activation::new(Bindings {
        object: Some(&object),
        ..Bindings::default()
    });
    let looping = cel::compile(
        "object.spec.containers.all(a, object.spec.containers.all(b, \
         object.spec.containers.all(c, a.name != '' || b.name != c.name)))",
    )
    .unwrap();
    let err = activation.evaluate(&looping).unwrap_err();
    assert!(err.contains("cost limit exceeded"), "{err}");
    // The same data read once is well inside the budget.
    let once = cel::compile("object.spec.containers.all(c, c.image.contains(':'))").unwrap();
    assert_eq!(activation.evaluate(&once), Ok(cel::Value::Bool(true)));
    // Lists that no read of the request pays for are not offered.
    assert_eq!(
        cel::compile("lists.range(1000000).all(i, lists.range(1000000).all(j, i != j))")
            .unwrap_err(),
        CompileError::Unsupported("range".into())
    );
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
            "object.metadata.name.reverseDomain() == 'io.k8s'",
            CompileError::Unsupported("reverseDomain".into()),
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
