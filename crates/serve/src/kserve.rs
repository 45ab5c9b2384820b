//! The KServe v2 (Open Inference Protocol) REST routes, so the server drops into serving stacks that
//! speak it: server and model metadata, readiness, and `infer` on FP32 tensors. The input is a batch of
//! normalised images `[N, 3, H, W]` (NCHW, as the ONNX export takes them); the outputs are `logits`
//! `[N, classes]` and, when asked for, `embedding` `[N, features]`.

use crate::batcher::Output;
use crate::http::ApiError;
use crate::routes::{answer, enqueue, AppState};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use effnet_engine::FeatureMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;

/// The routes under `/v2`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route(
            "/v2/health/live",
            get(|| async { Json(json!({ "live": true })) }),
        )
        .route(
            "/v2/health/ready",
            get(|| async { Json(json!({ "ready": true })) }),
        )
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(infer))
}

async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "effnet",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": []
    }))
}

/// 404 unless `name` is the served model's.
fn check_name(state: &AppState, name: &str) -> Result<(), ApiError> {
    if name == state.model.info.name {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no model `{name}`: this server serves `{}`",
                state.model.info.name
            ),
        ))
    }
}

async fn model_metadata(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_name(&state, &name)?;
    let info = &state.model.info;
    let r = i64::from(info.resolution);
    Ok(Json(json!({
        "name": info.name,
        "versions": ["1"],
        "platform": "effnet",
        "inputs": [{ "name": "input", "datatype": "FP32", "shape": [-1, 3, r, r] }],
        "outputs": [
            { "name": "logits", "datatype": "FP32", "shape": [-1, info.labels.len()] },
            { "name": "embedding", "datatype": "FP32", "shape": [-1, info.embedding_size] }
        ]
    })))
}

async fn model_ready(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_name(&state, &name)?;
    Ok(Json(json!({ "name": name, "ready": true })))
}

/// One input or output tensor.
#[derive(Debug, Deserialize, Serialize)]
pub struct Tensor {
    /// Its name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Always `FP32` here.
    pub datatype: String,
    /// Row-major values (nested arrays are flattened).
    pub data: Value,
}

/// A requested output.
#[derive(Debug, Deserialize)]
pub struct RequestedOutput {
    /// `logits` or `embedding`.
    pub name: String,
}

/// An inference request.
#[derive(Debug, Deserialize)]
pub struct InferRequest {
    /// The client's id, echoed.
    pub id: Option<String>,
    /// Exactly one tensor, `input`.
    pub inputs: Vec<Tensor>,
    /// The outputs wanted (default: `logits`).
    pub outputs: Option<Vec<RequestedOutput>>,
}

/// The values of a (possibly nested) JSON array of numbers, or why not.
fn flatten(value: &Value, out: &mut Vec<f32>) -> Result<(), ApiError> {
    match value {
        Value::Array(items) => items.iter().try_for_each(|v| flatten(v, out)),
        Value::Number(n) => {
            out.push(n.as_f64().unwrap_or(f64::NAN) as f32);
            Ok(())
        }
        _ => Err(ApiError::bad_request("data must hold only numbers")),
    }
}

/// The images of an `[N, 3, H, W]` FP32 tensor, each NHWC.
fn images(input: &Tensor, max_pixels: u64) -> Result<Vec<FeatureMap>, ApiError> {
    if input.datatype != "FP32" {
        return Err(ApiError::bad_request(format!(
            "input datatype {} is not supported: send FP32",
            input.datatype
        )));
    }
    let &[n, 3, h, w] = input.shape.as_slice() else {
        return Err(ApiError::bad_request(format!(
            "input shape {:?}: expected [N, 3, H, W]",
            input.shape
        )));
    };
    if n == 0 || h == 0 || w == 0 || (h as u64).saturating_mul(w as u64) > max_pixels {
        return Err(ApiError::bad_request(format!(
            "input shape {:?}: N, H and W must be positive and H x W at most {max_pixels}",
            input.shape
        )));
    }
    let mut data = Vec::new();
    flatten(&input.data, &mut data)?;
    if data.len() != n * 3 * h * w {
        return Err(ApiError::bad_request(format!(
            "input holds {} values but its shape {:?} needs {}",
            data.len(),
            input.shape,
            n * 3 * h * w
        )));
    }
    if data.iter().any(|v| !v.is_finite()) {
        return Err(ApiError::bad_request("input values must be finite"));
    }
    let plane = h * w;
    Ok(data
        .chunks_exact(3 * plane)
        .map(|chw| {
            let nhwc: Vec<f32> = (0..plane)
                .flat_map(|p| (0..3).map(move |c| chw[c * plane + p]))
                .collect();
            FeatureMap::new(&nhwc, h, w, 3)
        })
        .collect())
}

async fn infer(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    check_name(&state, &name)?;
    // Parsed here rather than by axum's `Json`, so that a client that leaves out the content type is
    // still understood, and a malformed body gets a JSON error.
    let request: InferRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("not an inference request: {e}")))?;
    let [input] = request.inputs.as_slice() else {
        return Err(ApiError::bad_request("send exactly one input tensor"));
    };
    let wanted: Vec<String> = match &request.outputs {
        Some(outputs) => outputs.iter().map(|o| o.name.clone()).collect(),
        None => vec!["logits".into()],
    };
    let kinds = wanted
        .iter()
        .map(|name| match name.as_str() {
            "logits" => Ok(Output::Logits),
            "embedding" => Ok(Output::Embedding),
            other => Err(ApiError::bad_request(format!(
                "no output `{other}`: use logits or embedding"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let images = images(input, effnet_data::max_pixels())?;
    let n = images.len();
    // Every image is queued before any is awaited, so the batcher can run them together; the logits
    // come from the pooled features.
    let queued = images
        .into_iter()
        .map(|image| enqueue(&state, image, Output::Embedding))
        .collect::<Result<Vec<_>, _>>()?;
    let mut features = Vec::with_capacity(n);
    for q in queued {
        features.push(answer(q).await?);
    }
    let outputs: Vec<Tensor> = wanted
        .iter()
        .zip(kinds)
        .map(|(name, kind)| {
            let rows: Vec<Vec<f32>> = match kind {
                Output::Embedding => features.clone(),
                Output::Logits => features
                    .iter()
                    .map(|f| state.model.engine.classify(f))
                    .collect(),
            };
            let width = rows.first().map_or(0, Vec::len);
            Tensor {
                name: name.clone(),
                shape: vec![n, width],
                datatype: "FP32".into(),
                data: json!(rows.concat()),
            }
        })
        .collect();
    let mut answer = json!({ "model_name": name, "model_version": "1", "outputs": outputs });
    if let Some(id) = request.id {
        answer["id"] = json!(id);
    }
    Ok(Json(answer))
}
