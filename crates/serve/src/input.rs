//! Images from requests: the body itself or the first file of a multipart form, decoded (with the pixel
//! limit checked in the header first) and preprocessed on the engine's thread pool, at most `decoders` at once.

use crate::http::ApiError;
use crate::routes::AppState;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, StatusCode};
use effnet_data::preprocess::{decode_from, preprocess};
use effnet_data::DataError;
use effnet_engine::FeatureMap;
use image::RgbImage;
use std::io::Cursor;
use std::path::Path;

/// An uploaded file: its name (the multipart file name, or `body`) and bytes.
pub struct Upload {
    /// What the answer calls it.
    pub name: String,
    /// The encoded image.
    pub bytes: Bytes,
}

/// The image of a request: the body, or the first file field of a `multipart/form-data` body. A body
/// that announces more than `max_body` bytes is refused before any of it is read.
pub async fn upload(request: Request, max_body: usize) -> Result<Upload, ApiError> {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max_body as u64) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over the limit of {max_body} bytes"),
        ));
    }
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if !multipart {
        let bytes = Bytes::from_request(request, &())
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        return Ok(Upload {
            name: "body".into(),
            bytes,
        });
    }
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| ApiError::new(e.status(), e.body_text()))?
    {
        let Some(name) = field.file_name().map(str::to_string) else {
            continue;
        };
        let bytes = field
            .bytes()
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        return Ok(Upload { name, bytes });
    }
    Err(ApiError::bad_request("the form has no file field"))
}

/// Why an upload could not be decoded: 415 for what is not an image, 413 over the pixel limit, 400 for a
/// corrupt image.
fn decode_error(e: DataError) -> ApiError {
    match &e {
        DataError::TooLarge { .. } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
        _ => ApiError::bad_request(e.to_string()),
    }
}

/// Decodes `upload` and runs `then` on the image, on the engine's thread pool (waiting for a decoder
/// slot first).
pub async fn on_decoded<T: Send + 'static>(
    state: &AppState,
    upload: Upload,
    then: impl FnOnce(RgbImage) -> T + Send + 'static,
) -> Result<T, ApiError> {
    if upload.bytes.is_empty() {
        return Err(ApiError::bad_request("the request has no image"));
    }
    if image::guess_format(&upload.bytes).is_err() {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "{}: not an image (send PNG, JPEG, WebP, BMP or TIFF)",
                upload.name
            ),
        ));
    }
    let _slot = state
        .decoders
        .acquire()
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
    // On the engine's own thread pool: decoding takes turns with the batches there instead of competing
    // with them for the cores (a thread preempted in the middle of its share of a batch holds the whole
    // batch back).
    let (done, result) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let decoded = decode_from(Path::new(&upload.name), Cursor::new(&upload.bytes))
            .map(then)
            .map_err(decode_error);
        let _ = done.send(decoded);
    });
    result
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the decoder stopped"))?
}

/// Runs `f` on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// The network's input for a decoded image: preprocessed as `state`'s model expects.
pub fn network_input(state: &AppState) -> impl FnOnce(RgbImage) -> FeatureMap + Send + 'static {
    let pre = state.model.info.preprocessing;
    let resolution = state.model.info.resolution;
    move |image| {
        let input = preprocess(&image, &pre, resolution);
        FeatureMap::new(&input.data, input.height, input.width, 3)
    }
}
