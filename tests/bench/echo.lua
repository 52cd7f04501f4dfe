-- wrk script for the mcp-tunnel benchmark: one MCP `tools/call echo` per request, as a
-- Streamable HTTP POST (JSON answer), checked on the way back.
--
-- Environment:
--   BENCH_AUTH    connector key; sent as `Authorization: Bearer …` when set (the mcp-tunnel path)
--   BENCH_RESULT  file the summary is written to (one `key value` per line, then the latency
--                 histogram as `hist <microseconds> <count>` lines)
--
-- Every answer must be HTTP 200 and carry the echoed marker text; anything else is counted as
-- `bad_status` or `bad_body`, and run.sh fails the benchmark when either is non-zero.

local marker = "mcp-tunnel-bench-echo-5f3a"

wrk.method = "POST"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"'
  .. marker .. '"}}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. auth
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bad_status = 0
  bad_body = 0
  ok = 0
end

function response(status, headers, body)
  if status ~= 200 then
    bad_status = bad_status + 1
  elseif not body or not string.find(body, marker, 1, true) then
    bad_body = bad_body + 1
  else
    ok = ok + 1
  end
end

function done(summary, latency, requests)
  local bs, bb, good = 0, 0, 0
  for _, t in ipairs(threads) do
    bs = bs + t:get("bad_status")
    bb = bb + t:get("bad_body")
    good = good + t:get("ok")
  end
  local path = os.getenv("BENCH_RESULT")
  local out = path and assert(io.open(path, "w")) or io.stdout
  local e = summary.errors
  out:write("requests ", summary.requests, "\n")
  out:write("duration_us ", summary.duration, "\n")
  out:write("bytes ", summary.bytes, "\n")
  out:write("ok ", good, "\n")
  out:write("bad_status ", bs, "\n")
  out:write("bad_body ", bb, "\n")
  out:write("err_connect ", e.connect, "\n")
  out:write("err_read ", e.read, "\n")
  out:write("err_write ", e.write, "\n")
  out:write("err_status ", e.status, "\n")
  out:write("err_timeout ", e.timeout, "\n")
  out:write("lat_min ", latency.min, "\n")
  out:write("lat_max ", latency.max, "\n")
  out:write("lat_mean ", latency.mean, "\n")
  for _, p in ipairs({50, 90, 99}) do
    out:write("p", p, " ", latency:percentile(p), "\n")
  end
  -- The whole histogram (distinct values only), so rounds can be merged exactly.
  for i = 1, #latency do
    local value, count = latency(i)
    out:write("hist ", value, " ", count, "\n")
  end
  if path then
    out:close()
  end
end
