-- wrk script for the bench: POST the sync body with the session cookie and CSRF token taken
-- from the environment, and print the summary as one JSON line for the bench to parse.
wrk.method = "POST"
wrk.body = '{"data":{"bench":true}}'
wrk.headers["Content-Type"] = "application/json"
local cookie = os.getenv("BENCH_COOKIE")
if cookie and cookie ~= "" then wrk.headers["Cookie"] = cookie end
local csrf = os.getenv("BENCH_CSRF")
if csrf and csrf ~= "" then wrk.headers["X-CSRF-Token"] = csrf end

-- BENCH_KEY_PREFIX set: every request carries an Idempotency-Key of its own (the prefix, the
-- thread's number and a count), so the gateway's idempotency store takes part in each one.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_no", threads)
end
local key_prefix = os.getenv("BENCH_KEY_PREFIX")
if key_prefix and key_prefix ~= "" then
  local sent = 0
  function request()
    sent = sent + 1
    wrk.headers["Idempotency-Key"] = key_prefix .. "-" .. tostring(thread_no) .. "-" .. sent
    return wrk.format()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"seconds":%.6f,"failed":%d,"p50_ms":%.3f,"p99_ms":%.3f}\n',
    summary.requests, summary.duration / 1e6,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
