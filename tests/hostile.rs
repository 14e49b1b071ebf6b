//! Hostile and malformed input against a real server process over TLS: transport, HTTP, JSON
//! and AdmissionReview probes, each with its expected safe outcome (never a 5xx, never an
//! `allowed: true` for something that is not a review). After every probe the server must
//! still answer a good review correctly.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Server {
    addr: SocketAddr,
    ca: String,
    _process: Portcullis,
    _dir: tempfile::TempDir,
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut process = Portcullis::spawn(
        portcullis_serve(dir.path())
            .args([
                "--connection-timeout",
                "1s",
                "--request-timeout",
                "2s",
                "--idle-timeout",
                "3s",
                "--policies",
            ])
            .arg(repo().join("policies")),
    );
    let addr = process.address("listen").await;
    let ca = std::fs::read_to_string(dir.path().join("certs/ca.crt")).unwrap();
    Server {
        addr,
        ca,
        _process: process,
        _dir: dir,
    }
}

fn tls_config(ca: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    tls_client(&[ca], alpn)
}

async fn tls(server: &Server) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    tokio_rustls::TlsConnector::from(tls_config(&server.ca, &[b"http/1.1"]))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

/// Reads until the server closes. A server that holds the connection open past the bound
/// fails the test: every probe here must end in a close, and "no answer" never passes by
/// timing out.
async fn read_all<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    read_until_closed(stream).await.0
}

/// What the server sent before closing, and how long it took to close.
async fn read_until_closed<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> (Vec<u8>, Duration) {
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    let bound = Duration::from_secs(15);
    // A reset counts as closed too: the server ended the connection.
    let _ = tokio::time::timeout(bound, stream.read_to_end(&mut out))
        .await
        .unwrap_or_else(|_| panic!("the server held the connection open for {bound:?}"));
    (out, started.elapsed())
}

/// Sends raw bytes over TLS and returns everything the server answers.
async fn exchange(server: &Server, bytes: &[u8]) -> Vec<u8> {
    let mut stream = tls(server).await;
    let _ = stream.write_all(bytes).await;
    let _ = stream.flush().await;
    read_all(&mut stream).await
}

fn status_of(answer: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(answer.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn request(method: &str, path: &str, content_type: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

fn review_bytes(f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut review = read_json(&apiserver_fixtures().join("create-pod-2.json"));
    f(&mut review);
    wire(&review)
}

/// The compliant captured pod with `fields` written first in its object.
fn compliant_object_starting(fields: &str) -> Vec<u8> {
    let raw = std::fs::read_to_string(apiserver_fixtures().join("create-pod.json")).unwrap();
    raw.replacen("\"object\": {", &format!("\"object\": {{{fields},"), 1)
        .into_bytes()
}

/// The compliant captured pod with `fields` written first in its metadata.
fn compliant_metadata_starting(fields: &str) -> Vec<u8> {
    let raw = std::fs::read_to_string(apiserver_fixtures().join("create-pod.json")).unwrap();
    raw.replacen("\"metadata\": {", &format!("\"metadata\": {{{fields},"), 1)
        .into_bytes()
}

/// The compliant captured pod, changed by `f`.
fn compliant_review(f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut review = read_json(&apiserver_fixtures().join("create-pod.json"));
    f(&mut review);
    wire(&review)
}

/// The compliant captured pod with its pod-level `"runAsUser": 1000` replaced by `text`.
fn compliant_with(text: &str) -> Vec<u8> {
    let raw = std::fs::read_to_string(apiserver_fixtures().join("create-pod.json")).unwrap();
    let spec_at = raw.find("\"spec\": {").unwrap();
    let at = spec_at + raw[spec_at..].find("\"runAsUser\": 1000").unwrap();
    format!(
        "{}{}{}",
        &raw[..at],
        text,
        &raw[at + "\"runAsUser\": 1000".len()..]
    )
    .into_bytes()
}

fn post(body: Vec<u8>) -> Vec<u8> {
    request(
        "POST",
        "/validate?timeout=5s",
        Some("application/json"),
        &body,
    )
}

/// The health check after every probe: a good review, judged correctly, uid echoed.
async fn still_answers(server: &Server, after: &str) {
    let body = std::fs::read(apiserver_fixtures().join("create-pod-2.json")).unwrap();
    let answer = exchange(server, &post(body)).await;
    assert_eq!(
        status_of(&answer),
        Some(200),
        "after {after}: {}",
        String::from_utf8_lossy(&answer)
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.contains("6506b51d-0eb5-4129-a9a2-550fb38d21ab")
            && text.contains(r#""allowed":false"#),
        "after {after}: {text}"
    );
}

/// The table's 56 probes and the 9 transport probes written out below.
const PROBES: usize = 56 + 9;

#[derive(Debug)]
enum Expect {
    Status(u16),
    /// Judged: HTTP 200 and `allowed: false`.
    Denied,
    /// Judged: HTTP 200 and `allowed: true`.
    Allowed,
}

/// HTTP, JSON and AdmissionReview probes: bytes sent, outcome expected.
fn http_probes() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let good = std::fs::read(apiserver_fixtures().join("create-pod-2.json")).unwrap();
    let good_text = String::from_utf8(good.clone()).unwrap();
    let mut with_bom = vec![0xEF, 0xBB, 0xBF];
    with_bom.extend_from_slice(&good);
    let mut invalid_utf8 = good_text
        .replacen("\"bare\"", "\"b\u{1}re\"", 1)
        .into_bytes();
    let at = invalid_utf8
        .windows(4)
        .position(|w| w == b"b\x01re")
        .unwrap();
    invalid_utf8[at + 1] = 0xFF;
    let duplicate_uid = good_text
        .replacen("\"uid\":", "\"uid\": \"forged\", \"uid\":", 1)
        .into_bytes();
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
    let big_annotation = "x".repeat(6 * 1024 * 1024);
    vec![
        ("empty body", post(vec![]), Expect::Status(400)),
        ("not JSON", post(b"<xml/>".to_vec()), Expect::Status(400)),
        ("a JSON array", post(b"[{}]".to_vec()), Expect::Status(400)),
        ("a JSON string", post(b"\"AdmissionReview\"".to_vec()), Expect::Status(400)),
        ("byte-order mark", post(with_bom), Expect::Status(400)),
        ("invalid UTF-8", post(invalid_utf8), Expect::Status(400)),
        ("trailing garbage", post([good.clone(), b"}{".to_vec()].concat()), Expect::Status(400)),
        ("nesting beyond the limit", post(nested), Expect::Status(400)),
        ("duplicate uid", post(duplicate_uid), Expect::Status(400)),
        ("request null", post(review_bytes(|r| r["request"] = Value::Null)), Expect::Status(400)),
        ("request an array", post(review_bytes(|r| r["request"] = json!([1]))), Expect::Status(400)),
        ("uid missing", post(review_bytes(|r| { r["request"].as_object_mut().unwrap().remove("uid"); })), Expect::Status(400)),
        ("uid a number", post(review_bytes(|r| r["request"]["uid"] = json!(7))), Expect::Status(400)),
        ("UID in capitals", post(review_bytes(|r| {
            let uid = r["request"].as_object_mut().unwrap().remove("uid").unwrap();
            r["request"]["UID"] = uid;
        })), Expect::Status(400)),
        ("apiVersion v1beta1", post(review_bytes(|r| r["apiVersion"] = json!("admission.k8s.io/v1beta1"))), Expect::Status(400)),
        ("kind ConversionReview", post(review_bytes(|r| r["kind"] = json!("ConversionReview"))), Expect::Status(400)),
        ("operation unknown", post(review_bytes(|r| r["request"]["operation"] = json!("PATCH"))), Expect::Status(400)),
        ("object null on CREATE", post(review_bytes(|r| r["request"]["object"] = Value::Null)), Expect::Denied),
        ("containers an object", post(review_bytes(|r| r["request"]["object"]["spec"]["containers"] = json!({"a": 1}))), Expect::Denied),
        ("runAsUser a string", post(review_bytes(|r| {
            r["request"]["object"]["spec"]["securityContext"] = json!({"runAsUser": "1000", "runAsNonRoot": true});
        })), Expect::Denied),
        ("runAsUser beyond i64", post(review_bytes(|r| {
            r["request"]["object"]["spec"]["securityContext"] = json!({"runAsUser": 1e30});
        })), Expect::Denied),
        ("spec a string", post(review_bytes(|r| r["request"]["object"]["spec"] = json!("oops"))), Expect::Denied),
        ("object a string", post(review_bytes(|r| r["request"]["object"] = json!("a pod"))), Expect::Denied),
        ("object an array", post(review_bytes(|r| r["request"]["object"] = json!([{"spec": {}}]))), Expect::Denied),
        // The object's own fields given twice are no object we can read: denied, as a typed
        // decode of the whole object would, whichever copy is compliant.
        ("spec given twice", post(compliant_object_starting("\"spec\": {\"containers\": []}")), Expect::Denied),
        ("metadata given twice", post(compliant_object_starting("\"metadata\": {\"name\": \"other\"}")), Expect::Denied),
        // So are the metadata's fields the checks read, and a metadata of another type or
        // with a field of another type. Keys are compared unescaped, as a typed decode does.
        ("labels given twice", post(compliant_metadata_starting("\"labels\": {}")), Expect::Denied),
        ("an escaped key naming a field given twice", post(compliant_metadata_starting("\"na\\u006de\": \"other\"")), Expect::Denied),
        ("metadata null", post(compliant_review(|r| r["request"]["object"]["metadata"] = Value::Null)), Expect::Denied),
        ("metadata a number", post(compliant_review(|r| r["request"]["object"]["metadata"] = json!(5))), Expect::Denied),
        ("labels a string", post(compliant_review(|r| r["request"]["object"]["metadata"]["labels"] = json!("app=web"))), Expect::Denied),
        // Annotations stay text until a check asks for them, checked as they are read.
        ("an annotation a number", post(compliant_review(|r| r["request"]["object"]["metadata"]["annotations"] = json!({"a": "b", "c": 1}))), Expect::Denied),
        ("an annotation null", post(compliant_review(|r| r["request"]["object"]["metadata"]["annotations"] = json!({"a": null}))), Expect::Denied),
        ("annotations an array", post(compliant_review(|r| r["request"]["object"]["metadata"]["annotations"] = json!(["a=b"]))), Expect::Denied),
        ("an annotation half a surrogate pair", post(String::from_utf8(compliant_review(|r| {
            r["request"]["object"]["metadata"]["annotations"] = json!({"a": "HALF"});
        })).unwrap().replace("HALF", "\\ud800").into_bytes()), Expect::Denied),
        ("an annotation key half a surrogate pair", post(String::from_utf8(compliant_review(|r| {
            r["request"]["object"]["metadata"]["annotations"] = json!({"HALF": "a"});
        })).unwrap().replace("HALF", "\\ud800").into_bytes()), Expect::Denied),
        ("annotations null", post(compliant_review(|r| r["request"]["object"]["metadata"]["annotations"] = Value::Null)), Expect::Allowed),
        ("an owner reference without a kind", post(compliant_review(|r| {
            r["request"]["object"]["metadata"]["ownerReferences"] = json!([{"name": "web"}]);
        })), Expect::Denied),
        ("the compliant pod, rewritten", post(compliant_review(|_| {})), Expect::Allowed),
        // A field nothing reads is skipped without recursion, however deep.
        ("a field nested 100 000 deep", post(compliant_object_starting(&format!(
            "\"x-nested\": {}{}", "[".repeat(100_000), "]".repeat(100_000)
        ))), Expect::Allowed),
        ("case-variant securityContext is ignored, not obeyed", post(review_bytes(|r| {
            r["request"]["object"]["spec"]["SecurityContext"] = json!({"runAsNonRoot": true});
        })), Expect::Denied),
        ("a legitimate 6 MB review", post(review_bytes(|r| {
            r["request"]["object"]["metadata"]["annotations"] = json!({"example.com/blob": big_annotation});
            r["request"]["object"] = read_json(&apiserver_fixtures().join("create-pod.json"))["request"]["object"].clone();
            r["request"]["object"]["metadata"]["annotations"]["example.com/blob"] = json!("x".repeat(6 * 1024 * 1024));
        })), Expect::Allowed),
        // Duplicate keys inside the pod spec resolve as kube-apiserver's Go decoder does: the
        // last one wins. So the stored pod and the judged pod cannot differ.
        ("duplicate runAsUser, root first", post(compliant_with("\"runAsUser\": 0, \"runAsUser\": 1000")), Expect::Allowed),
        ("duplicate runAsUser, root last", post(compliant_with("\"runAsUser\": 1000, \"runAsUser\": 0")), Expect::Denied),
        ("GET /validate", request("GET", "/validate", None, b""), Expect::Status(405)),
        ("PUT /mutate", request("PUT", "/mutate", Some("application/json"), &good), Expect::Status(405)),
        ("unknown path", request("POST", "/admit", Some("application/json"), &good), Expect::Status(404)),
        ("path traversal", request("POST", "/../validate", Some("application/json"), &good), Expect::Status(404)),
        ("text/plain", request("POST", "/validate", Some("text/plain"), &good), Expect::Status(415)),
        ("no content type", request("POST", "/validate", None, &good), Expect::Status(415)),
        ("URL of 20 KB", request("POST", &format!("/validate?timeout={}", "9".repeat(20_000)), Some("application/json"), &good), Expect::Status(414)),
        ("headers of 100 KB", {
            let mut r = b"POST /validate HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
            r.extend(std::iter::repeat_n(b'a', 100_000));
            r.extend_from_slice(b"\r\n\r\n");
            r
        }, Expect::Status(431)),
        ("200 headers", {
            let mut r = b"POST /validate HTTP/1.1\r\nHost: x\r\n".to_vec();
            for i in 0..200 {
                r.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
            }
            r.extend_from_slice(b"\r\n");
            r
        }, Expect::Status(431)),
        ("Content-Length and Transfer-Encoding together", {
            let mut r = format!("POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n", good.len()).into_bytes();
            r.extend_from_slice(&good);
            r
        }, Expect::Status(400)),
        ("broken chunked encoding", b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n".to_vec(), Expect::Status(400)),
        ("a request line that is not HTTP", b"HELLO\r\n\r\n".to_vec(), Expect::Status(400)),
    ]
}

#[tokio::test]
async fn hostile_probes_get_safe_answers_and_the_server_keeps_answering() {
    let server = start().await;
    let mut failures = Vec::new();
    let mut probes = 0;

    for (name, bytes, expect) in http_probes() {
        probes += 1;
        let answer = exchange(&server, &bytes).await;
        let status = status_of(&answer);
        let text = String::from_utf8_lossy(&answer);
        let body: Option<Value> = text
            .split_once("\r\n\r\n")
            .and_then(|(_, b)| serde_json::from_str(b).ok());
        let ok = match expect {
            Expect::Status(code) => status == Some(code) && !text.contains(r#""allowed":true"#),
            Expect::Denied => {
                status == Some(200)
                    && body
                        .as_ref()
                        .is_some_and(|b| b["response"]["allowed"] == false)
            }
            Expect::Allowed => {
                status == Some(200)
                    && body
                        .as_ref()
                        .is_some_and(|b| b["response"]["allowed"] == true)
            }
        };
        if !ok {
            failures.push(format!(
                "{name}: expected {expect:?}, got {status:?}: {}",
                &text[..text.len().min(300)]
            ));
        }
        if status.is_some_and(|s| s >= 500) {
            failures.push(format!("{name}: a 5xx for client input"));
        }
        still_answers(&server, name).await;
    }

    // Transport probes, in code.
    probes += 1; // plaintext HTTP on the TLS port: no HTTP answer.
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"POST /validate HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_all(&mut tcp).await;
    assert_eq!(
        answer.first(),
        Some(&0x15),
        "plaintext must get a TLS alert, got {answer:?}"
    );
    still_answers(&server, "plaintext").await;

    probes += 1; // random bytes instead of a ClientHello.
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3, 4, 5])
        .await
        .unwrap();
    drop(read_all(&mut tcp).await);
    still_answers(&server, "garbage handshake").await;

    probes += 1; // a client that only speaks h2: no common protocol, no handshake.
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let h2_only = tokio_rustls::TlsConnector::from(tls_config(&server.ca, &[b"h2"]))
        .connect("localhost".try_into().unwrap(), tcp)
        .await;
    assert!(
        h2_only.is_err(),
        "an h2-only client must not complete the handshake"
    );
    still_answers(&server, "h2 ALPN").await;

    probes += 1; // HTTP/2 with prior knowledge over an http/1.1 connection: refused.
    let mut h2 = tls(&server).await;
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    h2.flush().await.unwrap();
    let (answer, after) = read_until_closed(&mut h2).await;
    // Closed at once, not held until a timeout.
    assert!(after < Duration::from_secs(1), "closed after {after:?}");
    assert!(
        !answer.starts_with(&[0, 0]),
        "the server answered with HTTP/2 frames"
    );
    assert!(
        answer.is_empty()
            || status_of(&answer).is_some_and(|s| (400..500).contains(&s) || s == 505),
        "{answer:?}"
    );
    still_answers(&server, "h2 prior knowledge").await;

    probes += 1; // an idle connection is waiting, not slow: kept past --connection-timeout
    // (1 s) and closed at --idle-timeout (3 s).
    let mut idle = tls(&server).await;
    let (answer, after) = read_until_closed(&mut idle).await;
    assert!(answer.is_empty(), "{answer:?}");
    assert!(
        after >= Duration::from_millis(2900) && after < Duration::from_secs(10),
        "idle connection closed after {after:?}"
    );
    still_answers(&server, "idle").await;

    probes += 1; // slowloris: a partial head, then silence: closed at --connection-timeout.
    let mut slow = tls(&server).await;
    slow.write_all(b"POST /validate HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    slow.flush().await.unwrap();
    let (answer, after) = read_until_closed(&mut slow).await;
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(3),
        "a stalled head was closed after {after:?}"
    );
    assert!(
        status_of(&answer).is_none_or(|s| s == 408),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    still_answers(&server, "slowloris").await;

    probes += 1; // a trickled body cannot hold the connection past the request deadline.
    let mut trickle = tls(&server).await;
    trickle.write_all(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{").await.unwrap();
    trickle.flush().await.unwrap();
    let answer = read_all(&mut trickle).await;
    assert_eq!(
        status_of(&answer),
        Some(408),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    still_answers(&server, "trickled body").await;

    probes += 1; // 50 MB declared: refused before it is sent, let alone buffered.
    let mut huge = tls(&server).await;
    huge.write_all(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 52428800\r\n\r\n").await.unwrap();
    huge.flush().await.unwrap();
    // Not a byte of the body is sent: the answer must come from the declared length alone.
    let mut first = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), huge.read_exact(&mut first))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status_of(&first), Some(413));
    still_answers(&server, "50 MB body").await;

    probes += 1; // two pipelined reviews in one write: both answered, in order.
    let one = std::fs::read(apiserver_fixtures().join("create-pod.json")).unwrap();
    let mut pipelined = request("POST", "/validate", Some("application/json"), &one);
    let keep = String::from_utf8(pipelined.clone())
        .unwrap()
        .replace("Connection: close\r\n", "");
    pipelined = [
        keep.into_bytes(),
        post(std::fs::read(apiserver_fixtures().join("create-pod-2.json")).unwrap()),
    ]
    .concat();
    let answer = String::from_utf8_lossy(&exchange(&server, &pipelined).await).into_owned();
    let first_uid = answer.find("83f493bc-ca46-47da-961b-d97aa7995c42");
    let second_uid = answer.find("6506b51d-0eb5-4129-a9a2-550fb38d21ab");
    assert!(first_uid.is_some() && first_uid < second_uid, "{answer}");
    still_answers(&server, "pipelining").await;

    assert_eq!(probes, PROBES, "probes run");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
