//! Reading a provider's reply stream: server-sent events over reqwest's byte stream, handed one
//! by one to a provider's [`Decoder`]. A broken or malformed stream, or one that ends before its
//! terminal event, is a [`ModelError::Stream`]: never a silent partial reply.

use crate::http::{error_chain, shorten};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use improv_kernel::{ModelError, ModelUpdate, Reply};
use std::time::Duration;

/// Turns a provider's events into a [`Reply`].
pub(crate) trait Decoder {
    /// The event that ends a complete reply, for error messages.
    const TERMINAL: &'static str;

    /// Handles one event (`event` is the SSE event name, "message" when the frame has none).
    /// Returns true once the terminal event arrived.
    fn event(
        &mut self,
        event: &str,
        data: &str,
        update: &mut (dyn for<'u> FnMut(ModelUpdate<'u>) + Send),
    ) -> Result<bool, ModelError>;

    /// The complete reply, after the terminal event.
    fn finish(self, request_bytes: u64) -> Result<Reply, ModelError>;
}

/// Reads `response` to its terminal event through `decoder`.
pub(crate) async fn read<D: Decoder>(
    provider: &str,
    response: reqwest::Response,
    mut decoder: D,
    request_bytes: u64,
    update: &mut (dyn for<'u> FnMut(ModelUpdate<'u>) + Send),
) -> Result<Reply, ModelError> {
    let mut events = response.bytes_stream().eventsource();
    let mut seen = 0usize;
    while let Some(next) = events.next().await {
        let event = next.map_err(|e| {
            ModelError::Stream(format!(
                "{provider}'s reply stream broke after {seen} events: {}. The partial reply \
                 was discarded; the connection was cut or a proxy closed it.",
                error_chain(&e)
            ))
        })?;
        seen += 1;
        if decoder.event(&event.event, &event.data, update)? {
            // Read to the end of the body so the connection goes back to the pool; a server
            // that keeps it open after the terminal event only costs the connection.
            let _ = tokio::time::timeout(Duration::from_millis(200), async {
                while events.next().await.is_some() {}
            })
            .await;
            return decoder.finish(request_bytes);
        }
    }
    Err(ModelError::Stream(format!(
        "{provider}'s reply stream ended after {seen} events without its final `{}` event. The \
         partial reply was discarded; the server or a proxy closed the stream early.",
        D::TERMINAL
    )))
}

/// Parses one event's JSON, or says which event was malformed.
pub(crate) fn parse<'de, T: serde::Deserialize<'de>>(
    provider: &str,
    event: &str,
    data: &'de str,
) -> Result<T, ModelError> {
    serde_json::from_str(data).map_err(|e| {
        ModelError::Stream(format!(
            "{provider} sent a malformed `{event}` stream event ({e}): {}",
            shorten(data, 300)
        ))
    })
}
