-- Prints wrk's result as one JSON line (latencies in microseconds), so the
-- harness reads p50/p99/p99.9 at saturation without scraping text.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"tool":"wrk","requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"mean_us":%.1f,"max_us":%d,"percentiles":[',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max))
  local qs = {0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 100}
  for i, q in ipairs(qs) do
    local v = q == 0 and latency.min or (q == 100 and latency.max or latency:percentile(q))
    io.write(string.format('%s[%g,%d]', i > 1 and ',' or '', q, v))
  end
  io.write(']}\n')
end
