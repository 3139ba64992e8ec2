//! The stage view: `improv serve`. An HTTP API to start, watch and steer performances of a
//! stage, their events as Server-Sent Events (resumable with `Last-Event-ID`, replayed from the
//! log once finished), the ledger, an OpenAI-compatible `POST /v1/chat/completions`, an OpenAPI
//! document, and a web page that shows it all live.
//!
//! Reading order: [`live`] (a running performance: its event ring, broadcast and approvals),
//! [`stream`] (a stream that misses nothing and repeats nothing), [`api`] (the routes),
//! [`openai`] (the compatible endpoint) and [`auth`] (the bearer token).
//!
//! ```no_run
//! # async fn run(stage: std::sync::Arc<improv_stage::Stage>) -> Result<(), improv_serve::ServeError> {
//! let server = improv_serve::bind(stage, &improv_serve::ServeArgs::default()).await?;
//! println!("{} · token {}", server.url(), server.token());
//! server.run(std::future::pending()).await
//! # }
//! ```

mod api;
pub mod auth;
pub mod doors;
mod error;
pub mod host;
mod listen;
pub mod live;
mod mcp;
mod openai;
pub mod ops;
mod perform;
mod routines;
mod stored;
mod stream;

pub use error::{ApiError, ServeError};
pub use listen::Limits;

use api::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use improv_log::EventLog;
use improv_stage::Stage;
use live::Hub;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The address `improv serve` listens on unless told otherwise.
pub const DEFAULT_BIND: &str = "127.0.0.1:7878";
/// The largest request body the API reads; chat requests may carry a longer conversation.
pub const BODY_LIMIT: usize = 256 * 1024;
pub const CHAT_BODY_LIMIT: usize = 4 * 1024 * 1024;
/// How long a request's headers may take to arrive, and a connection may wait idle between
/// requests, unless told otherwise.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request body may stall unless told otherwise.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The most connections served at once unless told otherwise (each open page holds a few).
pub const MAX_CONNECTIONS: usize = 256;
/// How long a stopping server lets its connections finish, once its performances have ended.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// `improv serve`'s options.
#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    /// The address to listen on. Anything but loopback needs --behind-tls-proxy.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_BIND)]
    pub bind: SocketAddr,
    /// The bearer token's file; generated on first start (default: .improv/serve.token).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Allow a non-loopback --bind: a TLS-terminating proxy fronts it, so the token never
    /// crosses the network in clear text.
    #[arg(long)]
    pub behind_tls_proxy: bool,
    /// The most performances running at once; more are refused with 429.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_performances: usize,
    /// Another name the server answers to (repeatable): the public name behind
    /// --behind-tls-proxy, as NAME (any port) or NAME:PORT. Requests with any other `Host` are
    /// refused (421), which stops DNS rebinding.
    #[arg(long = "allow-host", value_name = "NAME")]
    pub allow_hosts: Vec<String>,
    /// The most connections served at once; beyond, new ones get 503.
    #[arg(long, value_name = "N", default_value_t = MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Seconds a request's headers may take to arrive (and a connection may sit idle between
    /// requests).
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds)]
    pub header_timeout: Duration,
    /// Seconds a request body may stall before the request fails with 408.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = seconds)]
    pub idle_timeout: Duration,
    /// How long an `ask` decision of an MCP client's `perform` waits for an answer
    /// (POST /performances/ID/approvals/N) before it is denied, as
    /// `improv worker --ask-timeout` does (which bounds it instead with --store).
    #[arg(long, default_value = ASK_TIMEOUT_TEXT, value_parser = humantime::parse_duration)]
    pub ask_timeout: Duration,
}

/// [`ServeArgs::ask_timeout`]'s default, the same as `improv worker --ask-timeout`'s.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(600);
/// [`ASK_TIMEOUT`] as the flag's default is written (a test checks they agree).
const ASK_TIMEOUT_TEXT: &str = "10m";

/// A duration in seconds, fractions allowed.
fn seconds(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("`{text}` is not a positive number of seconds"))
}

impl ServeArgs {
    fn limits(&self) -> Limits {
        Limits {
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections.max(1),
        }
    }
}

impl Default for ServeArgs {
    fn default() -> Self {
        ServeArgs {
            bind: DEFAULT_BIND.parse().unwrap_or_else(|_| {
                // DEFAULT_BIND is a literal socket address.
                SocketAddr::from(([127, 0, 0, 1], 7878))
            }),
            token_file: None,
            behind_tls_proxy: false,
            max_performances: 64,
            allow_hosts: Vec::new(),
            max_connections: MAX_CONNECTIONS,
            header_timeout: HEADER_TIMEOUT,
            ask_timeout: ASK_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

/// A bound server, not yet serving: its address and token are known, so a caller (or a test)
/// can print or use them before [`Server::run`].
pub struct Server {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    token: auth::Token,
    token_file: PathBuf,
    router: Router,
    /// Every performance run here, `/mcp`'s `perform` calls' too.
    hub: Arc<Hub>,
    limits: Limits,
    /// [`AppState::shutdown`]: cancelled before the connections close.
    shutdown: tokio_util::sync::CancellationToken,
}

impl Server {
    /// The address it listens on (with the real port when `--bind` asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's address.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The bearer token every API request must carry.
    pub fn token(&self) -> &str {
        &self.token.value
    }

    /// Whether this start generated the token (then it is shown once).
    pub fn token_created(&self) -> bool {
        self.token.created
    }

    pub fn token_file(&self) -> &std::path::Path {
        &self.token_file
    }

    /// Serves until `shutdown` completes, then stops accepting, interrupts the performances
    /// still running, waits for each to log its end, and lets the connections finish.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let connections =
            listen::accept_until(self.listener, self.router, self.limits, shutdown).await;
        // Before anything closes a connection: its chat's stored performance is not stopped.
        self.shutdown.cancel();
        // Streams end with their performances, so stop those first; then no more start (a
        // call on a connection still open is refused), and those that were starting stop too.
        for live in self.hub.all() {
            if let Some(c) = live.control() {
                c.cancel.cancel();
            }
        }
        let running = self.hub.close().await;
        for live in &running {
            if let Some(c) = live.control() {
                c.cancel.cancel();
            }
        }
        for live in running {
            live.ended().await;
        }
        connections.close(CLOSE_GRACE).await;
        Ok(())
    }
}

/// Binds the server for `stage`: checks the address, reads or creates the token, opens the log.
pub async fn bind(stage: Arc<Stage>, args: &ServeArgs) -> Result<Server, ServeError> {
    bind_with_doors(stage, args, None).await
}

/// [`bind`], answering for the stage's doors too (`POST /doors/NAME`, `GET /doors`) when a
/// daemon runs them.
pub async fn bind_with_doors(
    stage: Arc<Stage>,
    args: &ServeArgs,
    doors: Option<Arc<doors::Doors>>,
) -> Result<Server, ServeError> {
    bind_with(stage, args, Backing { doors, store: None }).await
}

/// What a server stands on besides its stage folder.
#[derive(Default)]
pub struct Backing {
    /// The door daemon, whose doors it answers for.
    pub doors: Option<Arc<doors::Doors>>,
    /// The performance store (`--store`): performances every worker performs are listed,
    /// shown and streamed from it, their notes and approval answers written to it, and
    /// `/metrics` and `/readyz` count and probe it.
    pub store: Option<Arc<dyn improv_store::Store>>,
}

/// [`bind`], on what `backing` names.
pub async fn bind_with(
    stage: Arc<Stage>,
    args: &ServeArgs,
    backing: Backing,
) -> Result<Server, ServeError> {
    let Backing { doors, store } = backing;
    if !args.bind.ip().is_loopback() && !args.behind_tls_proxy {
        return Err(ServeError::Insecure { addr: args.bind });
    }
    let state_dir = improv_perform::state_dir(&stage);
    let token_file = args
        .token_file
        .clone()
        .unwrap_or_else(|| state_dir.join(auth::TOKEN_FILE));
    if improv_perform::control::within_reach(&stage, &token_file) {
        return Err(ServeError::Token {
            action: "keep the token in",
            path: token_file,
            source: std::io::Error::other(
                "it lies in the stage's workspace, where actors' commands could read it and answer their own approvals; use .improv/serve.token (the default) or a file outside the workspace",
            ),
        });
    }
    let token = auth::load_or_create(&token_file)?;
    let log = Arc::new(EventLog::open(&state_dir)?);
    let hub = Arc::new(Hub::default());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let app = AppState {
        stage,
        log,
        hub: hub.clone(),
        state_dir,
        max_running: args.max_performances.max(1),
        ask_timeout: args.ask_timeout,
        following: stored::Following::new(args.max_performances.max(1)),
        store,
        shutdown: shutdown.clone(),
    };
    let mut router = router(app, token.value.clone());
    if let Some(doors) = doors {
        router = router.merge(doors::routes(doors, token.value.clone()));
    }
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|source| ServeError::Bind {
            addr: args.bind,
            source,
        })?;
    let addr = listener.local_addr()?;
    // Outermost: a request for another name reaches nothing, not even the token check.
    let hosts = Arc::new(host::AllowedHosts::new(addr, &args.allow_hosts));
    let router = router.layer(axum::middleware::from_fn_with_state(hosts, host::check));
    Ok(Server {
        listener,
        addr,
        token,
        token_file,
        router,
        hub,
        limits: args.limits(),
        shutdown,
    })
}

/// `improv serve`: binds, says where it serves (and the token, the first time), and serves
/// until Ctrl-C.
pub async fn serve(stage: Arc<Stage>, args: ServeArgs) -> Result<(), ServeError> {
    let name = stage.stage.name.clone();
    let server = bind(stage, &args).await?;
    if server.token_created() {
        eprintln!(
            "improv serve: new bearer token {} (saved in {}; shown only this once)",
            server.token(),
            server.token_file().display()
        );
    } else {
        eprintln!(
            "improv serve: bearer token in {}",
            server.token_file().display()
        );
    }
    eprintln!(
        "improv serve: stage {name} at {} · open {}#token=<token> · Ctrl-C stops",
        server.url(),
        server.url()
    );
    server
        .run(async {
            // If the handler cannot be installed, serve until killed. (`improv serve` stops on
            // SIGTERM and SIGHUP too: its binary handles the signals.)
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
        .await
}

/// `/healthz` and `/readyz` without the token (probes carry none), `/metrics` with it; with a
/// store, `/readyz` probes it and `/metrics` has its fleet gauges, as a worker's do.
fn ops_routes(app: &AppState, token: Arc<str>) -> Router {
    let running = app.hub.clone();
    let ops = Arc::new(ops::Ops {
        metrics: app.hub.metrics.clone(),
        readiness: ops::Readiness {
            stage: Some(app.stage.path.clone()),
            store: app.store.clone(),
            ..Default::default()
        },
        running: Some(Box::new(move || running.len())),
    });
    ops::probes(ops.clone())
        .merge(ops::metrics(ops).layer(axum::middleware::from_fn_with_state(token, auth::require)))
}

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");
const OPENAPI: &str = include_str!("../assets/openapi.json");

/// The page's policy: its own scripts and styles only, no inline script, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

fn asset(kind: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, kind),
            (CACHE_CONTROL, "no-cache"),
            (CONTENT_SECURITY_POLICY, CSP),
        ],
        body,
    )
}

fn router(app: AppState, token: Arc<str>) -> Router {
    let ops = ops_routes(&app, token.clone());
    let performances = Router::new()
        .route("/stage", get(api::get_stage))
        .route("/performances", get(api::list).post(api::start))
        .route("/performances/{id}", get(api::get))
        .route("/performances/{id}/stop", post(api::stop))
        .route("/performances/{id}/notes", post(api::note))
        .route("/performances/{id}/approvals/{approval}", post(api::answer))
        .route("/performances/{id}/events", get(api::events))
        .route("/ledger", get(api::ledger_list))
        .route("/ledger/{collection}", get(api::ledger_get))
        .route("/ledger/{collection}/settle", post(api::ledger_settle))
        .route("/routines", get(routines::list))
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{id}", get(openai::model_get))
        .route(
            "/openapi.json",
            get(|| async { asset("application/json", OPENAPI) }),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    let chat = Router::new()
        .route("/v1/chat/completions", post(openai::completions))
        .layer(DefaultBodyLimit::max(CHAT_BODY_LIMIT));
    // The stage as an MCP server over streamable HTTP, behind the same token: any MCP client
    // can cast it as one of its props (`improv mcp` is the same over stdio).
    // Its `perform` takes one of the server's places, as `POST /performances` and a chat do:
    // with a store it is queued for the workers, without one performed here among the rest.
    let stage = app.stage.clone();
    let performing: Arc<dyn improv_mcp::Elsewhere> = match app.store.clone() {
        Some(store) => Arc::new(mcp::Queued {
            store,
            stage: stage.clone(),
            shutdown: app.shutdown.clone(),
            following: app.following.clone(),
            held: Default::default(),
        }),
        None => Arc::new(mcp::Here {
            stage: stage.clone(),
            hub: app.hub.clone(),
            log: app.log.clone(),
            max_running: app.max_running,
            ask_timeout: app.ask_timeout,
            started: Default::default(),
        }),
    };
    let mcp = rmcp::transport::streamable_http_server::StreamableHttpService::new(
        move || {
            Ok(
                improv_mcp::StageServer::new(stage.clone())
                    .performing_elsewhere(performing.clone()),
            )
        },
        Arc::new(
            rmcp::transport::streamable_http_server::session::local::LocalSessionManager::default(),
        ),
        Default::default(),
    );
    let api = performances
        .merge(chat)
        .nest_service(api::MCP_PATH, mcp)
        .layer(axum::middleware::from_fn_with_state(token, auth::require))
        .with_state(app);
    // The page holds no data: it asks for the token and sends it with every API call.
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/assets/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .merge(api)
        .merge(ops)
        // Every error in one JSON envelope, the router's own 404 and 405 too.
        .layer(axum::middleware::from_fn(error::envelope))
}

#[cfg(test)]
mod tests {
    /// `--ask-timeout`'s default as written for the flag is [`super::ASK_TIMEOUT`], the
    /// default of a server built without flags.
    #[test]
    fn the_ask_timeout_flag_defaults_to_ask_timeout() {
        let parsed = humantime::parse_duration(super::ASK_TIMEOUT_TEXT);
        assert_eq!(parsed.ok(), Some(super::ASK_TIMEOUT));
        assert_eq!(super::ServeArgs::default().ask_timeout, super::ASK_TIMEOUT);
    }
}
