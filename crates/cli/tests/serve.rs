//! `effnet serve` end to end on the real Lite0 weights: answers identical to `effnet predict --json`, the
//! KServe v2 protocol, the model description, metrics and the bearer token, a short load test (no request
//! lost or answered twice, hostile uploads refused while the server keeps serving, a full queue answered
//! 503 and recovered from), and a graceful shutdown that finishes the requests in flight.

mod common;

use common::{asset_image, effnet, json, lite0_pth, root, scratch, Server};
use serde_json::{json, Value};
use std::process::Command;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// Status, request id header and JSON body of a POST of `body` to `url`.
fn post(url: &str, body: &[u8], headers: &[(&str, &str)]) -> (u16, String, Value) {
    let mut request = agent().post(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let mut response = request.send(body).unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status().as_u16();
    let id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = response
        .body_mut()
        .read_json::<Value>()
        .unwrap_or(Value::Null);
    (status, id, body)
}

fn get(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = agent().get(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let mut response = request.call().expect("the server answers");
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(asset_image(name)).unwrap()
}

fn logits(v: &Value) -> Vec<f64> {
    v["logits"]
        .as_array()
        .expect("logits")
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn classes(v: &Value) -> Vec<u64> {
    v["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["class"].as_u64().unwrap())
        .collect()
}

#[test]
fn serve_answers_as_predict_does_and_speaks_kserve_v2() {
    let weights = lite0_pth();
    let weights = weights.to_str().unwrap();
    let names = ["coffee", "chelsea", "camera"];
    let files: Vec<String> = names.iter().map(|n| asset_image(n)).collect();
    // One image at a time, as the server runs requests that arrive one at a time (a batch of several
    // images takes the engine's other path, whose sums differ in the last bits).
    let mut args = vec![
        "predict",
        "--weights",
        weights,
        "--logits",
        "--json",
        "--batch",
        "1",
    ];
    args.extend(files.iter().map(String::as_str));
    let expected = json(&effnet(&args));
    let server = Server::start(&["--weights", weights]);
    for (i, name) in names.iter().enumerate() {
        let url = format!("{}/v1/predict?logits=true", server.url);
        let (status, id, got) = post(&url, &read(name), &[("x-request-id", name)]);
        assert_eq!(status, 200, "{got}");
        assert_eq!((id.as_str(), got["id"].as_str()), (*name, Some(*name)));
        let want = &expected[i];
        assert_eq!(classes(&got), classes(want), "{name}: the same top-5");
        let worst = logits(&got)
            .iter()
            .zip(logits(want))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst <= 1e-6, "{name}: logits differ by {worst}");
    }
    // A multipart upload names the file.
    let boundary = "effnet-test-boundary";
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"coffee.png\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    form.extend(read("coffee"));
    form.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let url = format!("{}/v1/predict", server.url);
    let (status, _, got) = post(&url, &form, &[("content-type", &content_type)]);
    assert_eq!((status, got["file"].as_str()), (200, Some("coffee.png")));
    assert_eq!(got["top"][0]["class"], 967);

    // KServe v2: the coffee photo preprocessed here, sent as an NCHW tensor twice over, gives predict's
    // logits.
    let image = effnet_data::preprocess::decode(std::path::Path::new(&files[0])).unwrap();
    let pre = effnet_arch::Variant::by_name("lite0")
        .unwrap()
        .config()
        .preprocessing;
    let input = effnet_data::preprocess::preprocess(&image, &pre, 224);
    let plane = 224 * 224;
    let nchw: Vec<f32> = (0..3)
        .flat_map(|c| (0..plane).map(move |p| (c, p)))
        .map(|(c, p)| input.data[p * 3 + c])
        .collect();
    let data: Vec<f32> = nchw.iter().chain(&nchw).copied().collect();
    let body = json!({
        "id": "kserve-1",
        "inputs": [{ "name": "input", "shape": [2, 3, 224, 224], "datatype": "FP32", "data": data }],
        "outputs": [{ "name": "logits" }, { "name": "embedding" }]
    });
    let url = format!("{}/v2/models/lite0/infer", server.url);
    let (status, _, got) = post(&url, body.to_string().as_bytes(), &[]);
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["id"], "kserve-1");
    assert_eq!(got["outputs"][0]["shape"], json!([2, 1000]));
    assert_eq!(got["outputs"][1]["shape"], json!([2, 1280]));
    let values: Vec<f64> = got["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for row in values.chunks(1000) {
        let worst = row
            .iter()
            .zip(logits(&expected[0]))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            worst < 1e-4,
            "KServe logits differ from predict's by {worst}"
        );
    }
    let (status, _, got) = post(
        &format!("{}/v2/models/b7/infer", server.url),
        body.to_string().as_bytes(),
        &[],
    );
    assert_eq!(status, 404, "{got}");
    let bad = json!({ "inputs": [{ "name": "input", "shape": [1, 3, 2, 2], "datatype": "FP32", "data": [1.0] }] });
    let (status, _, got) = post(&url, bad.to_string().as_bytes(), &[]);
    assert_eq!(status, 400);
    assert!(got["error"].as_str().unwrap().contains("needs 12"), "{got}");
    let (status, text) = get(&format!("{}/v2/models/lite0", server.url), &[]);
    assert_eq!(status, 200);
    let meta: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 3, 224, 224]));
}

#[test]
fn the_model_metrics_embeddings_and_explanations_are_served_behind_the_token() {
    let dir = scratch("serve-token");
    let token = dir.join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let weights = lite0_pth();
    let server = Server::start(&[
        "--weights",
        weights.to_str().unwrap(),
        "--token-file",
        token.to_str().unwrap(),
    ]);
    let auth = [("authorization", "Bearer s3cret")];
    assert_eq!(get(&format!("{}/healthz", server.url), &[]).0, 200);
    let (status, page) = get(&format!("{}/", server.url), &[]);
    assert!(status == 200 && page.contains("id=\"top1\""));
    let url = format!("{}/v1/predict", server.url);
    let (status, id, got) = post(&url, &read("coffee"), &[("authorization", "Bearer wrong")]);
    assert_eq!(status, 401);
    assert_eq!(got["id"].as_str(), Some(id.as_str()), "errors carry the id");
    let (status, model) = get(&format!("{}/v1/model", server.url), &auth);
    assert_eq!(status, 200);
    let model: Value = serde_json::from_str(&model).unwrap();
    assert_eq!(
        (&model["name"], &model["params"], &model["resolution"]),
        (&json!("lite0"), &json!(4_652_008), &json!(224))
    );
    assert_eq!(model["labels"][967], "espresso");

    let (status, _, embedding) = post(&format!("{}/v1/embed", server.url), &read("coffee"), &auth);
    assert_eq!(status, 200);
    assert_eq!(embedding["embedding"].as_array().unwrap().len(), 1280);

    let url = format!("{}/v1/explain?top=2&format=map", server.url);
    let (status, _, explained) = post(&url, &read("coffee"), &auth);
    assert_eq!(status, 200, "{explained}");
    assert_eq!(explained["top"][0]["class"], 967);
    let e = &explained["explanations"][0];
    assert_eq!((&e["class"], &e["map"]["height"]), (&json!(967), &json!(7)));
    let mass: f64 = ["top_left", "top_right", "bottom_left", "bottom_right"]
        .iter()
        .map(|q| e["mass"][q].as_f64().unwrap())
        .sum();
    assert!((mass - 1.0).abs() < 1e-9);
    let url = format!("{}/v1/explain?class=281&method=gradcam%2B%2B", server.url);
    let (status, _, explained) = post(&url, &read("chelsea"), &auth);
    assert_eq!(status, 200, "{explained}");
    let png = explained["explanations"][0]["overlay"].as_str().unwrap();
    assert!(png.starts_with("iVBORw0KGgo"), "a base64 PNG");
    let url = format!("{}/v1/predict?top_k=many", server.url);
    let (status, _, got) = post(&url, &read("coffee"), &auth);
    assert_eq!(status, 400, "{got}");
    let url = format!("{}/v1/explain?layer=neck", server.url);
    let (status, _, got) = post(&url, &read("coffee"), &auth);
    assert_eq!(status, 400);
    assert!(got["error"].as_str().unwrap().contains("unknown layer"));

    let (status, metrics) = get(&format!("{}/metrics", server.url), &auth);
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"effnet_http_requests_total{route="/v1/predict",status="401"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("effnet_batch_size_count 1"), "{metrics}");
    assert!(metrics.contains("effnet_http_request_duration_seconds_bucket"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_request_over_the_time_limit_gets_504_and_the_server_goes_on() {
    let weights = lite0_pth();
    // One millisecond is less than decoding the photo takes.
    let server = Server::start(&["--weights", weights.to_str().unwrap(), "--timeout-ms", "1"]);
    let url = format!("{}/v1/predict", server.url);
    let (status, id, got) = post(&url, &read("coffee"), &[]);
    assert_eq!(status, 504, "{got}");
    assert_eq!(got["id"].as_str(), Some(id.as_str()));
    assert!(
        got["error"].as_str().unwrap().contains("within 1 ms"),
        "{got}"
    );
    // Still answering (the health check itself may or may not fit in the millisecond).
    let health = get(&format!("{}/healthz", server.url), &[]).0;
    assert!([200, 504].contains(&health), "{health}");
}

/// Runs `tools/loadtest.py` against `url` with `args`.
fn loadtest(url: &str, args: &[&str]) -> Value {
    let o = Command::new("python3")
        .arg(root().join("tools/loadtest.py"))
        .arg(url)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("JSON")
}

#[test]
fn a_short_load_test_loses_nothing_and_hostile_uploads_do_not_hurt() {
    let weights = lite0_pth();
    let weights = weights.to_str().unwrap();
    let images = [asset_image("coffee"), asset_image("chelsea")];
    let server = Server::start(&["--weights", weights, "--max-batch", "8"]);
    let mut args = vec!["--clients", "16", "--requests", "48", "--time-limit", "120"];
    args.extend(images.iter().map(String::as_str));
    let report = loadtest(&server.url, &args);
    let load = &report["load"];
    assert_eq!(load["sent"], 48, "{report}");
    assert_eq!(load["statuses"], json!({ "200": 48 }), "{report}");
    assert_eq!(
        (&load["lost"], &load["answered_twice"], &load["wrong_id"]),
        (&json!(0), &json!(0), &json!(0)),
        "{report}"
    );
    let hostile = &report["hostile"];
    for (case, status) in [
        ("bomb", 413),
        ("garbage", 415),
        ("truncated", 400),
        ("empty", 400),
        ("too_big", 413),
        ("after", 200),
    ] {
        assert_eq!(hostile[case]["status"], status, "{case}: {report}");
    }
    assert!(hostile["bomb"]["error"]
        .as_str()
        .unwrap()
        .contains("over the limit"));
    drop(server);

    // A queue of two in front of one image at a time: a burst of 16 is partly refused, then served again.
    let server = Server::start(&["--weights", weights, "--max-batch", "1", "--queue", "2"]);
    let report = loadtest(&server.url, &["--flood", "--clients", "16", &images[0]]);
    let flood = &report["flood"];
    let refused = flood["refused"].as_u64().unwrap();
    assert!(refused > 0, "{report}");
    assert_eq!(flood["refused_with_retry_after"].as_u64(), Some(refused));
    assert_eq!((&flood["other"], &flood["after"]), (&json!(0), &json!(200)));
}

#[test]
fn sigterm_finishes_the_requests_in_flight() {
    let weights = lite0_pth();
    // Batches wait 400 ms for company: the requests are still queued when the signal arrives.
    let mut server = Server::start(&[
        "--weights",
        weights.to_str().unwrap(),
        "--max-delay-ms",
        "400",
    ]);
    let url = format!("{}/v1/predict", server.url);
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                post(
                    &url,
                    &read("coffee"),
                    &[("x-request-id", &format!("inflight-{i}"))],
                )
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(150));
    let status = server.stop();
    for (i, c) in clients.into_iter().enumerate() {
        let (code, id, body) = c.join().unwrap();
        assert_eq!((code, id), (200, format!("inflight-{i}")), "{body}");
        assert_eq!(body["top"][0]["class"], 967);
    }
    assert!(status.success(), "the server exits cleanly: {status}");
}
