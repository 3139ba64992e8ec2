//! The MCP client: the servers of `[[props.mcp]]` attached to a performance, each of their tools
//! a [`Prop`] named `server.tool`.
//!
//! **When servers start.** A model request needs every prop's spec, so a server's tool list is
//! needed before its first call. [`attach`] reads it from a cache in the stage's
//! `.improv/mcp/SERVER.json`, kept with the server's configuration: while the configuration is
//! unchanged, a performance starts the server only when one of its tools is called. Without a
//! cached list (the first performance, or after the configuration changed) `attach` starts the
//! server to list its tools and keeps it running for the calls. Each start lists the tools again
//! and refreshes the cache, so an upgraded server is seen by the next performance.
//!
//! **Failures.** A server that crashed is restarted once, on the next call; the call that saw the
//! crash fails with an error saying so. A second crash, or a failed start, leaves the server
//! down and every later call fails with the reason. Every start and call has a time limit
//! (`timeout`, [`DEFAULT_TIMEOUT`] when absent), so a server that hangs or prints garbage
//! instead of JSON-RPC gives a clear error and never hangs the performance.
//!
//! **Shutdown.** [`Attached`] keeps the servers; dropping it (or [`Attached::shutdown`]) stops
//! them: each stdio server runs in its own process group, which is killed.
//!
//! **Environment.** A stdio server gets only `PATH`, the variables its `env` names, and
//! `set_env`: the director's keys never leak into a server that was not given them.

use crate::McpError;
use crate::schema::{TOOL_DESCRIPTION_MAX, shorten, trim_schema};
use async_trait::async_trait;
use improv_kernel::{Access, Prop, PropContext, PropError, ToolSpec};
use improv_stage::McpServer;
use rmcp::ServiceExt;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, GetPromptRequestParams, JsonObject,
    ReadResourceRequestParams, Tool,
};
use rmcp::service::{Peer, RoleClient, RunningService, ServiceError};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

/// How long a server may take to start or to answer one call when its `timeout` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Environment variables every stdio server gets: without `PATH`, `npx`, `uvx` and most
/// launchers cannot find their interpreter.
pub const BASE_ENV: &[&str] = &["PATH"];

/// How much of a server's stderr is kept for error messages.
const STDERR_TAIL: usize = 1500;

/// The servers of a stage, attached to one performance. Dropping it shuts them down.
pub struct Attached {
    servers: Vec<Arc<Server>>,
    tools: Vec<Arc<McpTool>>,
    warnings: Vec<String>,
}

/// Attaches the stage's MCP servers: reads or fetches each one's tool list (see the module
/// docs for when a server starts) and builds their props. `stage_dir` holds `.improv/`;
/// stdio servers run in their `cwd` (relative to `stage_dir`) or in `workspace`.
pub async fn attach(
    servers: &[McpServer],
    stage_dir: &Path,
    workspace: &Path,
) -> Result<Attached, McpError> {
    let servers: Vec<Arc<Server>> = servers
        .iter()
        .map(|config| Arc::new(Server::new(config.clone(), stage_dir, workspace)))
        .collect();
    let listed = futures::future::join_all(servers.iter().map(|s| s.tool_list())).await;
    let mut tools = Vec::new();
    let mut warnings = Vec::new();
    for (server, listed) in servers.iter().zip(listed) {
        let listed = listed?;
        if let Some(only) = &server.config.tools {
            for name in only {
                if !listed.iter().any(|t| t.name == *name) {
                    warnings.push(format!(
                        "MCP server `{}` has no tool `{name}` (named in its `tools`); it has: {}",
                        server.config.name,
                        listed
                            .iter()
                            .map(|t| t.name.as_ref())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        }
        for tool in listed {
            if server
                .config
                .tools
                .as_ref()
                .is_some_and(|only| !only.iter().any(|n| *n == tool.name))
            {
                continue;
            }
            tools.push(Arc::new(McpTool::new(server.clone(), &tool)));
        }
    }
    Ok(Attached {
        servers,
        tools,
        warnings,
    })
}

impl Attached {
    /// The props an actor asked for: a server's name brings all of its tools, `server.tool`
    /// one of them. Names that are neither are ignored (built-in props are not ours).
    pub fn props(&self, wanted: &[String]) -> Vec<Arc<dyn Prop>> {
        self.tools
            .iter()
            .filter(|t| {
                wanted
                    .iter()
                    .any(|w| *w == t.spec.name || *w == t.server.config.name)
            })
            .map(|t| t.clone() as Arc<dyn Prop>)
            .collect()
    }

    /// Every tool of every server, as props.
    pub fn all_props(&self) -> Vec<Arc<dyn Prop>> {
        self.tools
            .iter()
            .map(|t| t.clone() as Arc<dyn Prop>)
            .collect()
    }

    /// What the director should know: tools named in a server's `tools` that it does not have.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The servers running now, with their process ids (stdio) — for status and tests.
    pub fn running(&self) -> Vec<(String, Option<u32>)> {
        self.servers
            .iter()
            .filter_map(|s| {
                let pid = s.live.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
                Some((s.config.name.clone(), pid.pid))
            })
            .collect()
    }

    /// The resources a server offers (starting it if needed).
    pub async fn resources(&self, server: &str) -> Result<Vec<ResourceInfo>, McpError> {
        let s = self.server(server)?;
        let peer = s.peer().await.map_err(|r| s.error(r))?.0;
        let listed = s
            .limit(peer.list_all_resources())
            .await
            .map_err(|r| s.error(r))?;
        Ok(listed
            .into_iter()
            .map(|r| ResourceInfo {
                uri: r.uri.clone(),
                name: r.name.clone(),
                description: r.description.clone(),
                mime_type: r.mime_type.clone(),
            })
            .collect())
    }

    /// One resource's text (binary contents are described, not returned).
    pub async fn read_resource(&self, server: &str, uri: &str) -> Result<String, McpError> {
        let s = self.server(server)?;
        let peer = s.peer().await.map_err(|r| s.error(r))?.0;
        let read = s
            .limit(peer.read_resource(ReadResourceRequestParams::new(uri)))
            .await
            .map_err(|r| s.error(r))?;
        let value = serde_json::to_value(&read.contents).unwrap_or_default();
        let parts: Vec<String> = value
            .as_array()
            .map(|a| a.iter().map(render_resource).collect())
            .unwrap_or_default();
        Ok(parts.join("\n"))
    }

    /// The prompts a server offers (starting it if needed).
    pub async fn prompts(&self, server: &str) -> Result<Vec<PromptInfo>, McpError> {
        let s = self.server(server)?;
        let peer = s.peer().await.map_err(|r| s.error(r))?.0;
        let listed = s
            .limit(peer.list_all_prompts())
            .await
            .map_err(|r| s.error(r))?;
        Ok(listed
            .into_iter()
            .map(|p| PromptInfo {
                name: p.name.clone(),
                description: p.description.clone(),
                arguments: p
                    .arguments
                    .iter()
                    .flatten()
                    .map(|a| a.name.clone())
                    .collect(),
            })
            .collect())
    }

    /// A prompt's messages as text, one per line as `role: text`.
    pub async fn prompt(
        &self,
        server: &str,
        name: &str,
        arguments: JsonObject,
    ) -> Result<String, McpError> {
        let s = self.server(server)?;
        let peer = s.peer().await.map_err(|r| s.error(r))?.0;
        let mut params = GetPromptRequestParams::new(name.to_string());
        params.arguments = Some(arguments);
        let got = s
            .limit(peer.get_prompt(params))
            .await
            .map_err(|r| s.error(r))?;
        let value = serde_json::to_value(&got.messages).unwrap_or_default();
        let lines: Vec<String> = value
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                let role = m["role"].as_str().unwrap_or("?");
                format!("{role}: {}", render_block(&m["content"]))
            })
            .collect();
        Ok(lines.join("\n"))
    }

    /// Stops every server and waits for them to exit.
    pub async fn shutdown(self) {
        for s in &self.servers {
            s.stop();
            let conn = s.state.lock().await.conn.take();
            if let Some(conn) = conn {
                let mut client = conn.client;
                let _ = client.close_with_timeout(Duration::from_secs(3)).await;
            }
        }
    }

    fn server(&self, name: &str) -> Result<&Arc<Server>, McpError> {
        self.servers
            .iter()
            .find(|s| s.config.name == name)
            .ok_or_else(|| McpError::NoServer {
                server: name.into(),
                known: self
                    .servers
                    .iter()
                    .map(|s| s.config.name.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        for s in &self.servers {
            s.stop();
        }
    }
}

/// A resource a server offers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResourceInfo {
    pub uri: String,
    pub name: String,
    pub description: Option<String>,
    pub mime_type: Option<String>,
}

/// A prompt a server offers, with its argument names.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PromptInfo {
    pub name: String,
    pub description: Option<String>,
    pub arguments: Vec<String>,
}

/// One server's tool as a prop.
pub struct McpTool {
    server: Arc<Server>,
    tool: String,
    spec: ToolSpec,
    read_only: bool,
}

impl McpTool {
    fn new(server: Arc<Server>, tool: &Tool) -> Self {
        let schema = serde_json::Value::Object((*tool.input_schema).clone());
        McpTool {
            spec: ToolSpec {
                name: format!("{}.{}", server.config.name, tool.name),
                description: shorten(
                    tool.description.as_deref().unwrap_or_default(),
                    TOOL_DESCRIPTION_MAX,
                ),
                parameters: trim_schema(&schema),
            },
            tool: tool.name.to_string(),
            read_only: tool
                .annotations
                .as_ref()
                .and_then(|a| a.read_only_hint)
                .unwrap_or(false),
            server,
        }
    }

    /// The spec as the server wrote it, untrimmed: what trimming saves is measured against it.
    pub fn untrimmed_len(tool: &Tool, server: &str) -> usize {
        let spec = ToolSpec {
            name: format!("{server}.{}", tool.name),
            description: tool.description.as_deref().unwrap_or_default().to_string(),
            parameters: serde_json::Value::Object((*tool.input_schema).clone()),
        };
        serde_json::to_string(&spec).map_or(0, |s| s.len())
    }
}

#[async_trait]
impl Prop for McpTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn access(&self, _arguments: &serde_json::Value) -> Access {
        // The server's own hint; an untrusted hint only lets calls overlap, it grants nothing.
        if self.read_only {
            Access::Read
        } else {
            Access::Write
        }
    }

    fn timeout(&self) -> Option<Duration> {
        // Ours fires first, with a message that names the server; this is the backstop.
        Some(self.server.limit + Duration::from_secs(5))
    }

    async fn call(
        &self,
        arguments: serde_json::Value,
        context: &PropContext,
    ) -> Result<String, PropError> {
        let arguments = match arguments {
            serde_json::Value::Object(map) => map,
            _ => return Err(PropError::new("the arguments must be a JSON object")),
        };
        tokio::select! {
            r = self.server.call(&self.tool, arguments) => r.map_err(PropError::new),
            _ = context.cancel.cancelled() => Err(PropError::new("cancelled: the performance stopped")),
        }
    }
}

/// One configured server and its connection, when it has one.
struct Server {
    config: McpServer,
    stage_dir: PathBuf,
    workspace: PathBuf,
    limit: Duration,
    state: tokio::sync::Mutex<State>,
    /// The live connection's process and stop token, for a shutdown that cannot wait.
    live: Mutex<Option<Live>>,
    stderr: Arc<Mutex<String>>,
    /// Cancelled when the performance ends: no more starts.
    stopped: CancellationToken,
}

#[derive(Default)]
struct State {
    conn: Option<Connection>,
    /// How many times the server was started: the first start and one restart are allowed.
    starts: u32,
    /// Numbers connections, so a crash seen by two calls is handled once.
    generation: u64,
    /// Why the server is down for good.
    down: Option<String>,
}

struct Connection {
    client: RunningService<RoleClient, ()>,
}

#[derive(Clone)]
struct Live {
    pid: Option<u32>,
    cancel: CancellationToken,
}

/// The cached tool list, kept with the configuration it was listed under.
#[derive(Serialize, Deserialize)]
struct Cached {
    config: serde_json::Value,
    tools: Vec<Tool>,
}

impl Server {
    fn new(config: McpServer, stage_dir: &Path, workspace: &Path) -> Self {
        Server {
            limit: config.timeout.unwrap_or(DEFAULT_TIMEOUT),
            config,
            stage_dir: stage_dir.to_path_buf(),
            workspace: workspace.to_path_buf(),
            state: tokio::sync::Mutex::new(State::default()),
            live: Mutex::new(None),
            stderr: Arc::new(Mutex::new(String::new())),
            stopped: CancellationToken::new(),
        }
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    fn cache_path(&self) -> PathBuf {
        self.stage_dir
            .join(".improv")
            .join("mcp")
            .join(format!("{}.json", self.config.name))
    }

    fn config_key(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }

    /// The tool list: cached when the configuration is unchanged, else from the server.
    async fn tool_list(&self) -> Result<Vec<Tool>, McpError> {
        if let Ok(text) = std::fs::read_to_string(self.cache_path())
            && let Ok(cached) = serde_json::from_str::<Cached>(&text)
            && cached.config == self.config_key()
        {
            return Ok(cached.tools);
        }
        let peer = self.peer().await.map_err(|r| self.error(r))?.0;
        self.list_and_cache(&peer).await.map_err(|r| self.error(r))
    }

    async fn list_and_cache(&self, peer: &Peer<RoleClient>) -> Result<Vec<Tool>, String> {
        let tools = self.limit(peer.list_all_tools()).await?;
        let cached = Cached {
            config: self.config_key(),
            tools,
        };
        let path = self.cache_path();
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| {
                let text = serde_json::to_string(&cached).map_err(std::io::Error::other)?;
                std::fs::write(&path, text)
            });
        if let Err(e) = written {
            tracing::warn!(
                "could not cache the tools of MCP server `{}` in {}: {e}",
                self.name(),
                path.display()
            );
        }
        Ok(cached.tools)
    }

    fn error(&self, reason: String) -> McpError {
        McpError::Server {
            server: self.config.name.clone(),
            reason,
        }
    }

    /// Runs a request within the server's time limit.
    async fn limit<T>(
        &self,
        request: impl Future<Output = Result<T, ServiceError>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.limit, request).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(describe(&e)),
            Err(_) => Err(format!(
                "no answer within {}s (the server's `timeout`)",
                self.limit.as_secs_f64()
            )),
        }
    }

    /// The connection's peer and generation, starting (or restarting once) the server.
    async fn peer(&self) -> Result<(Peer<RoleClient>, u64), String> {
        let mut st = self.state.lock().await;
        if self.stopped.is_cancelled() {
            return Err("the performance has ended and its MCP servers are stopped".into());
        }
        if let Some(conn) = &st.conn {
            if !conn.client.is_closed() {
                return Ok((conn.client.peer().clone(), st.generation));
            }
            st.conn = None;
        }
        if let Some(down) = &st.down {
            return Err(down.clone());
        }
        if st.starts >= 2 {
            let down = format!(
                "it crashed again after being restarted once, so it stays down{}",
                self.stderr_note()
            );
            st.down = Some(down.clone());
            return Err(down);
        }
        st.starts += 1;
        let started = tokio::select! {
            r = self.connect() => r,
            _ = self.stopped.cancelled() => Err("the performance ended while it started".into()),
        };
        match started {
            Ok(conn) => {
                let peer = conn.client.peer().clone();
                st.conn = Some(conn);
                st.generation += 1;
                Ok((peer, st.generation))
            }
            Err(reason) => {
                self.kill();
                let down = format!("it could not start: {reason}{}", self.stderr_note());
                st.down = Some(down.clone());
                Err(down)
            }
        }
    }

    /// Drops the connection of `generation` after it failed, so the next call restarts it.
    async fn lost(&self, generation: u64) {
        let mut st = self.state.lock().await;
        if st.generation == generation {
            st.conn = None;
            self.kill();
        }
    }

    async fn call(&self, tool: &str, arguments: JsonObject) -> Result<String, String> {
        let named = |m: String| format!("MCP server `{}`: {m}", self.name());
        let (peer, generation) = self.peer().await.map_err(named)?;
        let params = CallToolRequestParams::new(tool.to_string()).with_arguments(arguments);
        let outcome = tokio::time::timeout(self.limit, peer.call_tool(params)).await;
        match outcome {
            Ok(Ok(result)) => render(result),
            Ok(Err(ServiceError::McpError(e))) => {
                Err(named(format!("`{tool}` failed: {}", e.message)))
            }
            Ok(Err(e @ (ServiceError::TransportClosed | ServiceError::TransportSend(_)))) => {
                let note = self.stderr_note();
                self.lost(generation).await;
                let then = match self.peer().await {
                    Ok(_) => {
                        "It was restarted: re-issue the call if it is still needed.".to_string()
                    }
                    Err(reason) => format!("It could not be restarted: {reason}"),
                };
                Err(named(format!(
                    "the server exited during `{tool}` ({}){note}. {then}",
                    describe(&e)
                )))
            }
            Ok(Err(e)) => Err(named(format!("`{tool}` failed: {}", describe(&e)))),
            Err(_) => Err(named(format!(
                "`{tool}` gave no answer within {}s (the server's `timeout`); it may still be working. Try a smaller step.",
                self.limit.as_secs_f64()
            ))),
        }
    }

    fn stderr_note(&self) -> String {
        let tail = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        let tail = tail.trim();
        if tail.is_empty() {
            String::new()
        } else {
            format!("; its stderr ends with: {tail}")
        }
    }

    /// Starts the server and completes the MCP handshake within the time limit.
    async fn connect(&self) -> Result<Connection, String> {
        let cancel = CancellationToken::new();
        let (client, pid) = if let Some(url) = &self.config.url {
            let mut headers = std::collections::HashMap::new();
            for (header, var) in &self.config.headers_from_env {
                let value = std::env::var(var).map_err(|_| {
                    format!(
                        "header `{header}` reads the environment variable `{var}`, which is not set"
                    )
                })?;
                let name = http::HeaderName::from_bytes(header.as_bytes())
                    .map_err(|e| format!("header name `{header}`: {e}"))?;
                let value = http::HeaderValue::from_str(&value)
                    .map_err(|e| format!("header `{header}` from `{var}`: {e}"))?;
                headers.insert(name, value);
            }
            let config = rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(url.clone())
                .custom_headers(headers);
            let http = improv_models::client_builder()
                .map_err(|e| e.to_string())?
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
            let transport = StreamableHttpClientTransport::with_client(http, config);
            let client = self
                .handshake(().serve_with_ct(transport, cancel.clone()))
                .await?;
            (client, None)
        } else {
            let (process, pid) = self.spawn()?;
            let client = self
                .handshake(().serve_with_ct(process, cancel.clone()))
                .await?;
            (client, pid)
        };
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = Some(Live { pid, cancel });
        Ok(Connection { client })
    }

    async fn handshake<E: std::fmt::Display>(
        &self,
        serve: impl Future<Output = Result<RunningService<RoleClient, ()>, E>>,
    ) -> Result<RunningService<RoleClient, ()>, String> {
        match tokio::time::timeout(self.limit, serve).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(format!("the MCP handshake failed: {e}")),
            Err(_) => Err(format!(
                "it did not complete the MCP handshake within {}s: it hangs, or prints something other than JSON-RPC on stdout",
                self.limit.as_secs_f64()
            )),
        }
    }

    /// Spawns a stdio server in its own process group, with the allowed environment only.
    fn spawn(&self) -> Result<(TokioChildProcess, Option<u32>), String> {
        // `command` is checked by the stage: a stdio server has one.
        let command = self.config.command.as_deref().unwrap_or_default();
        let program = if command.contains('/') && Path::new(command).is_relative() {
            self.stage_dir.join(command)
        } else {
            PathBuf::from(command)
        };
        let cwd = match &self.config.cwd {
            Some(dir) => self.stage_dir.join(dir),
            None => self.workspace.clone(),
        };
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(&self.config.args).current_dir(&cwd).env_clear();
        for name in BASE_ENV
            .iter()
            .copied()
            .chain(self.config.env.iter().map(String::as_str))
        {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        cmd.envs(&self.config.set_env);
        improv_edges::open_files::restore_in(cmd.as_std_mut());
        let mut wrapped = process_wrap::tokio::CommandWrap::from(cmd);
        wrapped
            .wrap(process_wrap::tokio::ProcessGroup::leader())
            .wrap(process_wrap::tokio::KillOnDrop);
        let (process, stderr) = TokioChildProcess::builder(wrapped)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                format!(
                    "`{}` could not be run in {}: {e}",
                    program.display(),
                    cwd.display()
                )
            })?;
        let pid = process.id();
        if let Some(stderr) = stderr {
            let tail = self.stderr.clone();
            let name = self.config.name.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(server = %name, "{line}");
                    let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                    t.push_str(&line);
                    t.push('\n');
                    if t.len() > STDERR_TAIL {
                        let mut cut = t.len() - STDERR_TAIL;
                        while !t.is_char_boundary(cut) {
                            cut += 1;
                        }
                        t.drain(..cut);
                    }
                }
            });
        }
        Ok((process, pid))
    }

    /// Kills the live connection's process group now and stops its service.
    fn kill(&self) {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(live) = live {
            live.cancel.cancel();
            if let Some(pid) = live.pid.and_then(|p| i32::try_from(p).ok()) {
                // The server leads its own process group (ProcessGroup::leader), so this reaches
                // whatever it started too. The process is not reaped yet (its handle is alive),
                // so the id cannot have been reused.
                // SAFETY: killpg has no memory-safety preconditions.
                unsafe {
                    libc::killpg(pid, libc::SIGKILL);
                }
            }
        }
    }

    /// The performance ended: no more starts, and the process goes.
    fn stop(&self) {
        self.stopped.cancel();
        self.kill();
    }
}

/// A `tools/call` result as the text the model reads; `isError` results are tool errors.
fn render(result: CallToolResult) -> Result<String, String> {
    let mut parts: Vec<String> = result
        .content
        .iter()
        .map(|block| render_block(&serde_json::to_value(block).unwrap_or_default()))
        .collect();
    if parts.is_empty()
        && let Some(structured) = &result.structured_content
    {
        parts.push(structured.to_string());
    }
    let text = parts.join("\n");
    if result.is_error == Some(true) {
        Err(if text.is_empty() {
            "the tool reported an error without a message".into()
        } else {
            text
        })
    } else {
        Ok(text)
    }
}

/// One content block as text: binary data is described, never pasted.
fn render_block(block: &serde_json::Value) -> String {
    match block["type"].as_str() {
        Some("text") => block["text"].as_str().unwrap_or_default().to_string(),
        Some("image") | Some("audio") => format!(
            "[{} {}, {} bytes base64]",
            block["type"].as_str().unwrap_or_default(),
            block["mimeType"].as_str().unwrap_or("?"),
            block["data"].as_str().map_or(0, str::len)
        ),
        Some("resource") => render_resource(&block["resource"]),
        Some("resource_link") => format!("[resource {}]", block["uri"].as_str().unwrap_or("?")),
        _ => block.to_string(),
    }
}

fn render_resource(r: &serde_json::Value) -> String {
    match r["text"].as_str() {
        Some(text) => text.to_string(),
        None => format!(
            "[resource {} ({}), {} bytes base64]",
            r["uri"].as_str().unwrap_or("?"),
            r["mimeType"].as_str().unwrap_or("binary"),
            r["blob"].as_str().map_or(0, str::len)
        ),
    }
}

fn describe(e: &ServiceError) -> String {
    match e {
        ServiceError::McpError(e) => e.message.to_string(),
        ServiceError::TransportClosed => "the connection closed".into(),
        ServiceError::UnexpectedResponse => "it sent a result of the wrong shape".into(),
        other => other.to_string(),
    }
}
