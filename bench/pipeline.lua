-- wrk script: DEPTH requests per write (pipelining), as in wrk's own pipeline example.
local depth = tonumber(os.getenv("DEPTH") or "16")
init = function(args)
  local r = {}
  for i = 1, depth do
    r[i] = wrk.format(nil, wrk.path)
  end
  req = table.concat(r)
end
request = function()
  return req
end
