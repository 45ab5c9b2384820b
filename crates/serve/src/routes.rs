//! The routes: the page, health and metrics, the model's description, and predictions, explanations and
//! embeddings of uploaded images (`/v1/...`), next to the KServe v2 protocol ([`crate::kserve`]).

use crate::batcher::{Answer, Batcher, Output};
use crate::http::{around, ApiError, RequestId};
use crate::input::{blocking, network_input, on_decoded, upload, Upload};
use crate::metrics::Metrics;
use crate::model::{Model, ModelInfo};
use crate::ServeConfig;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine as _;
use effnet_data::ranking::{top_k, Ranked};
use effnet_engine::FeatureMap;
use effnet_explain::report::{explain_image, Request as ExplainRequest};
use effnet_explain::{png_bytes, Classes, Layer, Method, Quadrants};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::{oneshot, Semaphore};

/// Everything the handlers share.
pub struct AppState {
    /// The network.
    pub model: Arc<Model>,
    /// How the server runs.
    pub config: ServeConfig,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The queue in front of the engine.
    pub batcher: Batcher,
    /// Decoder slots.
    pub decoders: Semaphore,
}

impl AppState {
    /// Starts the batcher for `model`.
    pub fn new(model: Model, config: ServeConfig) -> Self {
        let model = Arc::new(model);
        let metrics = Arc::new(Metrics::new(config.max_batch));
        let batcher = Batcher::start(
            model.clone(),
            metrics.clone(),
            config.max_batch,
            config.max_delay,
            config.queue,
        );
        Self {
            decoders: Semaphore::new(config.decoders.max(1)),
            model,
            config,
            metrics,
            batcher,
        }
    }
}

/// The application: every route, the body limit, and the middleware of [`around`].
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/v1/model", get(model_info))
        .route("/v1/predict", post(predict))
        .route("/v1/embed", post(embed))
        .route("/v1/explain", post(explain))
        .merge(crate::kserve::routes())
        .layer(DefaultBodyLimit::max(state.config.max_body))
        .layer(axum::middleware::from_fn_with_state(state.clone(), around))
        .with_state(state)
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn model_info(State(state): State<Arc<AppState>>) -> Json<ModelInfo> {
    Json(state.model.info.clone())
}

/// Queues `image` for the engine: 503 with `Retry-After` when the queue is full.
pub fn enqueue(
    state: &AppState,
    image: FeatureMap,
    output: Output,
) -> Result<oneshot::Receiver<Answer>, ApiError> {
    state
        .batcher
        .submit(image, output, &state.metrics)
        .map_err(|_| {
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the queue is full: retry shortly",
            );
            e.retry_after = Some(1);
            e
        })
}

/// The engine's answer for a queued image.
pub async fn answer(queued: oneshot::Receiver<Answer>) -> Result<Vec<f32>, ApiError> {
    queued
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?
        .map_err(ApiError::bad_request)
}

/// Runs `image` through the batcher.
pub async fn run_engine(
    state: &AppState,
    image: FeatureMap,
    output: Output,
) -> Result<Vec<f32>, ApiError> {
    answer(enqueue(state, image, output)?).await
}

/// The image of `upload` decoded, preprocessed and run through the batcher: the engine's `output`.
async fn through_engine(
    state: &AppState,
    upload: Upload,
    output: Output,
) -> Result<Vec<f32>, ApiError> {
    let image = on_decoded(state, upload, network_input(state)).await?;
    run_engine(state, image, output).await
}

/// The query's options, read after the body (so that a client still sending the body gets the error).
fn options<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

/// Options of `/v1/predict`.
#[derive(Debug, Deserialize)]
pub struct PredictQuery {
    /// How many classes to report (default 5).
    top_k: Option<usize>,
    /// Include the logits.
    #[serde(default)]
    logits: bool,
}

/// The answer of `/v1/predict`: one element of `effnet predict --json`, with the request's id.
#[derive(Debug, Serialize)]
pub struct Prediction {
    /// The request's id.
    pub id: String,
    /// The upload's name.
    pub file: String,
    /// The most probable classes.
    pub top: Vec<Ranked>,
    /// The logits, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logits: Option<Vec<f32>>,
}

async fn predict(
    State(state): State<Arc<AppState>>,
    Extension(RequestId(id)): Extension<RequestId>,
    query: Result<Query<PredictQuery>, QueryRejection>,
    request: Request,
) -> Result<Json<Prediction>, ApiError> {
    let upload = upload(request, state.config.max_body).await?;
    let query = options(query)?;
    let k = query.top_k.unwrap_or(5);
    if k == 0 {
        return Err(ApiError::bad_request("top_k must be at least 1"));
    }
    let file = upload.name.clone();
    let logits = through_engine(&state, upload, Output::Logits).await?;
    Ok(Json(Prediction {
        id,
        file,
        top: top_k(&logits, &state.model.info.labels, k),
        logits: query.logits.then_some(logits),
    }))
}

/// The answer of `/v1/embed`.
#[derive(Debug, Serialize)]
pub struct Embedding {
    /// The request's id.
    pub id: String,
    /// The upload's name.
    pub file: String,
    /// The pooled features.
    pub embedding: Vec<f32>,
}

async fn embed(
    State(state): State<Arc<AppState>>,
    Extension(RequestId(id)): Extension<RequestId>,
    request: Request,
) -> Result<Json<Embedding>, ApiError> {
    let upload = upload(request, state.config.max_body).await?;
    let file = upload.name.clone();
    let embedding = through_engine(&state, upload, Output::Embedding).await?;
    Ok(Json(Embedding {
        id,
        file,
        embedding,
    }))
}

/// Options of `/v1/explain`.
#[derive(Debug, Deserialize)]
pub struct ExplainQuery {
    /// Classes to explain, comma-separated (default: the most probable).
    class: Option<String>,
    /// How many of the most probable classes to explain (default 1).
    top: Option<usize>,
    /// `head` (default) or `stage:N`.
    layer: Option<String>,
    /// `gradcam` (default) or `gradcam++`.
    method: Option<String>,
    /// `overlay` (default: a PNG in base64) or `map` (the raw values).
    format: Option<String>,
}

/// A raw class map.
#[derive(Debug, Serialize)]
pub struct RawMap {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Row-major values.
    pub values: Vec<f32>,
}

/// One explained class.
#[derive(Debug, Serialize)]
pub struct ExplainedClass {
    /// Class index.
    pub class: usize,
    /// Class name.
    pub label: String,
    /// Softmax probability.
    pub prob: f64,
    /// Where the map peaks, `[y, x]` as fractions of the image's height and width.
    pub peak: [f64; 2],
    /// The map's share in each quadrant.
    pub mass: Quadrants,
    /// The overlay PNG, base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlay: Option<String>,
    /// The raw map.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map: Option<RawMap>,
}

/// The answer of `/v1/explain`.
#[derive(Debug, Serialize)]
pub struct Explained {
    /// The request's id.
    pub id: String,
    /// The upload's name.
    pub file: String,
    /// The five most probable classes.
    pub top: Vec<Ranked>,
    /// The classes explained.
    pub explanations: Vec<ExplainedClass>,
}

/// The explanation request a query asks for.
fn explain_request(state: &AppState, query: &ExplainQuery) -> Result<ExplainRequest, ApiError> {
    let layer = query.layer.as_deref().unwrap_or("head");
    let layer = Layer::from_name(layer).ok_or_else(|| {
        ApiError::bad_request(format!("unknown layer `{layer}`: use head or stage:N"))
    })?;
    let method = query.method.as_deref().unwrap_or("gradcam");
    let method = Method::from_name(method).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown method `{method}`: use gradcam or gradcam++"
        ))
    })?;
    let classes = match &query.class {
        Some(list) => Classes::Given(
            list.split(',')
                .map(|c| c.trim().parse())
                .collect::<Result<_, _>>()
                .map_err(|_| ApiError::bad_request(format!("class must be numbers: `{list}`")))?,
        ),
        None => Classes::Top(query.top.unwrap_or(1)),
    };
    Ok(ExplainRequest {
        preprocessing: state.model.info.preprocessing,
        resolution: state.model.info.resolution,
        layer,
        method,
        classes,
        overlay_side: OVERLAY_SIDE,
    })
}

/// The longest side of an overlay the server sends.
pub const OVERLAY_SIDE: u32 = 512;

async fn explain(
    State(state): State<Arc<AppState>>,
    Extension(RequestId(id)): Extension<RequestId>,
    query: Result<Query<ExplainQuery>, QueryRejection>,
    request: Request,
) -> Result<Json<Explained>, ApiError> {
    let upload = upload(request, state.config.max_body).await?;
    let query = options(query)?;
    let explain_request = explain_request(&state, &query)?;
    let raw = match query.format.as_deref().unwrap_or("overlay") {
        "overlay" => false,
        "map" => true,
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown format `{other}`: use overlay or map"
            )))
        }
    };
    let file = upload.name.clone();
    let image = on_decoded(&state, upload, |image| image).await?;
    let model = state.model.clone();
    let (top, explanations) = blocking(move || -> Result<_, ApiError> {
        let explainer = model.explainer.lock().expect("not poisoned");
        let labels = &model.info.labels;
        let report = explain_image(&explainer, &image, labels, &explain_request)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        drop(explainer);
        let top = top_k(&report.logits, labels, 5);
        let explanations = report
            .classes
            .into_iter()
            .map(|r| {
                Ok(ExplainedClass {
                    class: r.class,
                    label: r.label,
                    prob: r.prob,
                    peak: r.peak,
                    mass: r.mass,
                    overlay: if raw {
                        None
                    } else {
                        let png = png_bytes(&r.overlay)
                            .map_err(|e| ApiError::bad_request(e.to_string()))?;
                        Some(base64::engine::general_purpose::STANDARD.encode(png))
                    },
                    map: raw.then_some(RawMap {
                        height: r.map.height,
                        width: r.map.width,
                        values: r.map.values,
                    }),
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        Ok((top, explanations))
    })
    .await??;
    Ok(Json(Explained {
        id,
        file,
        top,
        explanations,
    }))
}
