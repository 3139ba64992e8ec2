//! `GET /routines`: the stage's routines as the stage view lists them (name, status,
//! stability, intent, and the record: uses, fallbacks, last success), read from the
//! `routines/` folder beside the stage file, the same files `improv routines` manages.

use crate::api::AppState;
use crate::error::ApiError;
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

/// `GET /routines`.
pub(crate) async fn list(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let dir = app.stage.dir.clone();
    let read = tokio::task::spawn_blocking(move || improv_routine::Repertoire::open(&dir)).await?;
    let repertoire = read.map_err(|e| ApiError::internal(e.to_string()))?;
    let list: Vec<Value> = repertoire.routines.iter().map(|r| r.summary()).collect();
    Ok(Json(json!({"routines": list})))
}
