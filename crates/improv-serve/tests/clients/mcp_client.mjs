// The official MCP TypeScript SDK as a client of improv serve's /mcp, set up as MCP hosts set it
// up (with an OAuth provider at hand): without the token it must fail with the server's message
// and never start OAuth discovery; with the token, `perform` without `intent` and `ledger_query`
// with a bad limit must come back as tool errors the model can read. Prints one JSON object
// for tests/all/mcp_http_errors.rs.
//
// Usage: node mcp_client.mjs URL TOKEN   (IMPROV_MCP_SDK: the SDK's dist/esm folder)
const [url, token] = process.argv.slice(2);
const sdk =
  process.env.IMPROV_MCP_SDK ??
  new URL(
    "../../../improv-mcp/tests/servers/node_modules/@modelcontextprotocol/sdk/dist/esm/",
    import.meta.url,
  ).pathname;
const { Client } = await import(`${sdk}/client/index.js`);
const { StreamableHTTPClientTransport } = await import(`${sdk}/client/streamableHttp.js`);

const fetched = [];
const oauth = [];
const logged = (input, init) => {
  fetched.push(String(input instanceof Request ? input.url : input));
  return fetch(input, init);
};
// What an MCP host hands the transport: it starts OAuth when the server asks for it.
const authProvider = {
  get redirectUrl() {
    return "http://127.0.0.1:9/callback";
  },
  get clientMetadata() {
    return { client_name: "improv-test", redirect_uris: ["http://127.0.0.1:9/callback"] };
  },
  clientInformation: () => (oauth.push("clientInformation"), undefined),
  saveClientInformation: () => oauth.push("saveClientInformation"),
  tokens: () => undefined,
  saveTokens: () => oauth.push("saveTokens"),
  redirectToAuthorization: () => oauth.push("redirectToAuthorization"),
  saveCodeVerifier: () => oauth.push("saveCodeVerifier"),
  codeVerifier: () => "",
};

const out = {};
const anonymous = new Client({ name: "improv-test", version: "1" });
try {
  await anonymous.connect(
    new StreamableHTTPClientTransport(new URL(url), { authProvider, fetch: logged }),
  );
  out.without_token = "connected";
} catch (e) {
  out.without_token = String(e?.message ?? e);
}
out.oauth_calls = oauth;
out.discovery = fetched.filter((u) => u.includes("/.well-known/"));

const client = new Client({ name: "improv-test", version: "1" });
await client.connect(
  new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  }),
);
const text = (r) => (r.content ?? []).map((c) => c.text ?? "").join("\n");
const noIntent = await client.callTool({ name: "perform", arguments: {} });
out.no_intent = { isError: noIntent.isError ?? false, text: text(noIntent) };
const badLimit = await client.callTool({
  name: "ledger_query",
  arguments: { collection: "leads", limit: -1 },
});
out.bad_limit = { isError: badLimit.isError ?? false, text: text(badLimit) };
const badOp = await client.callTool({
  name: "ledger_query",
  arguments: { collection: "leads", where: { name: { "~~": "Ada" } } },
});
out.bad_operator = { isError: badOp.isError ?? false, text: text(badOp) };
await client.close();
console.log(JSON.stringify(out));
