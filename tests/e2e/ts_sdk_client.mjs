// The TypeScript SDK's client as an MCP host, for test_eras_and_hosts.py: connects to the URL in
// argv[2] over Streamable HTTP with the connector key from $MCP_KEY, lists the tools, calls `echo`
// and prints one JSON line {"tools": [...], "echo": "<text>"}. Exits non-zero on any failure.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const url = new URL(process.argv[2]);
const transport = new StreamableHTTPClientTransport(url, {
  requestInit: { headers: { Authorization: `Bearer ${process.env.MCP_KEY}` } },
});
const client = new Client({ name: "mcp-tunnel-e2e-ts", version: "1.0.0" });
const timer = setTimeout(() => {
  console.error("timed out");
  process.exit(2);
}, 30000);
await client.connect(transport);
const { tools } = await client.listTools();
const echoTool = tools.find((t) => t.name === "echo");
const argName = Object.keys(echoTool?.inputSchema?.properties ?? { message: {} })[0];
const result = await client.callTool({ name: "echo", arguments: { [argName]: "tunnel-ts" } });
const text = result.content.filter((c) => c.type === "text").map((c) => c.text).join("\n");
await transport.terminateSession().catch(() => {});
await client.close();
clearTimeout(timer);
console.log(JSON.stringify({ tools: tools.map((t) => t.name), echo: text }));
