//! The one `Model` body every hosted provider shares: encode the request, post it with retries
//! ([`http::post`]), read the streamed reply through the provider's [`Decoder`] ([`sse::read`]).
//! A provider only says what differs, its wire format, by implementing [`Wire`];
//! [`hosted_model!`] writes its [`improv_kernel::Model`] impl.

use crate::Endpoint;
use crate::http::{self, Target};
use crate::sse::{self, Decoder};
use improv_kernel::{ModelError, ModelUpdate, Reply, Request};
use reqwest::header::HeaderMap;

/// What one hosted provider puts on the wire and reads back.
pub(crate) trait Wire: Send + Sync {
    /// Turns the provider's reply events into a reply.
    type Decoder: Decoder + Send;

    /// Where and how the model is reached.
    fn endpoint(&self) -> &Endpoint;
    /// The provider as a user knows it, for error messages.
    fn provider(&self) -> &'static str;
    /// The URL requests are posted to.
    fn url(&self) -> &str;
    /// The request body.
    fn encode(&self, request: &Request<'_>) -> Result<Vec<u8>, ModelError>;
    /// The request headers, the credential among them.
    fn headers(&self) -> Result<HeaderMap, ModelError>;
    /// A fresh decoder for one reply.
    fn decoder(&self) -> Self::Decoder;
}

/// One model call: the request posted (transient failures retried, each retry reported through
/// `update`) and the streamed reply decoded.
pub(crate) async fn respond<W: Wire>(
    wire: &W,
    request: Request<'_>,
    update: &mut (dyn for<'u> FnMut(ModelUpdate<'u>) + Send),
) -> Result<Reply, ModelError> {
    let body = wire.encode(&request)?;
    let request_bytes = body.len() as u64;
    let headers = wire.headers()?;
    let endpoint = wire.endpoint();
    let target = Target {
        provider: wire.provider(),
        model: &endpoint.name,
        url: wire.url(),
        key_env: &endpoint.key_env,
    };
    let response = http::post(&target, headers, body.into(), &endpoint.retry, update).await?;
    sse::read(
        wire.provider(),
        response,
        wire.decoder(),
        request_bytes,
        update,
    )
    .await
}

/// `impl Model for $provider` through its [`Wire`]: name, price and context window from the
/// endpoint, and [`respond`].
macro_rules! hosted_model {
    ($provider:ty) => {
        #[async_trait::async_trait]
        impl improv_kernel::Model for $provider {
            fn name(&self) -> &str {
                &crate::hosted::Wire::endpoint(self).name
            }

            fn price(&self) -> Option<improv_kernel::Price> {
                crate::hosted::Wire::endpoint(self).price
            }

            fn context_window(&self) -> Option<u64> {
                crate::hosted::Wire::endpoint(self).context_window
            }

            async fn respond(
                &self,
                request: improv_kernel::Request<'_>,
                update: &mut (dyn for<'u> FnMut(improv_kernel::ModelUpdate<'u>) + Send),
            ) -> Result<improv_kernel::Reply, improv_kernel::ModelError> {
                crate::hosted::respond(self, request, update).await
            }
        }
    };
}
pub(crate) use hosted_model;
