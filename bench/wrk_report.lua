-- wrk script for the bench: POST the sync body with the session cookie and CSRF token taken
-- from the environment, and print the summary as one JSON line for the bench to parse.
wrk.method = "POST"
wrk.body = '{"data":{"bench":true}}'
wrk.headers["Content-Type"] = "application/json"
local cookie = os.getenv("BENCH_COOKIE")
if cookie and cookie ~= "" then wrk.headers["Cookie"] = cookie end
local csrf = os.getenv("BENCH_CSRF")
if csrf and csrf ~= "" then wrk.headers["X-CSRF-Token"] = csrf end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"seconds":%.6f,"failed":%d,"p50_ms":%.3f,"p99_ms":%.3f}\n',
    summary.requests, summary.duration / 1e6,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
