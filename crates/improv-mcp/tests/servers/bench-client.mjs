// The official TypeScript MCP client calling server-everything's `echo` N times over stdio:
// the baseline of improv-mcp's benchmark (examples/mcp_overhead.rs). Prints JSON timings in µs.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const [server, n, warmup] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const transport = new StdioClientTransport({ command: "node", args: [server, "stdio"], stderr: "ignore" });
const client = new Client({ name: "bench", version: "0" });
await client.connect(transport);
const call = () => client.callTool({ name: "echo", arguments: { message: "ping" } });
for (let i = 0; i < warmup; i++) await call();
const times = [];
for (let i = 0; i < n; i++) {
  const t = process.hrtime.bigint();
  const r = await call();
  times.push(Number(process.hrtime.bigint() - t) / 1000);
  if (r.content[0].text !== "Echo: ping") throw new Error("unexpected result");
}
await client.close();
times.sort((a, b) => a - b);
const mean = times.reduce((a, b) => a + b, 0) / n;
console.log(JSON.stringify({ mean, p50: times[Math.floor(n / 2)], p99: times[Math.floor(n * 0.99)] }));
