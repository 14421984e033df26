-- The edge's own checks and OpenAI-shaped errors. Runs after the buffer filter (a body over the limit is already a
-- 413) and before ext_authz: nothing here costs a service any work.
--
-- Requests: JSON nested deeper than MAX_JSON_DEPTH is a 400 `json_too_deep` (the transcoder accepts about 100 levels,
-- protobuf's decoder in the services fewer: 33 levels under `metadata` were a 500).
-- Responses: the OpenAI error JSON a service put in the `x-llmaas-error` gRPC metadata becomes the body; the
-- transcoder's own 400s (marked by local_reply_config) are told by cause without echoing the body or proto type
-- names; an upstream "message larger than max" is a 413, not the 429 its gRPC status maps to; grpc-* headers never
-- reach the client.
-- The limits are llmaas.stack.envoy's MAX_BODY_BYTES and MAX_JSON_DEPTH (tests/unit/test_edge_limits.py keeps them
-- equal).
local MAX_BODY_BYTES = 16777216
local MAX_JSON_DEPTH = 32
-- Brackets and quotes the depth scan looks at, at most (about 110 ns each: 11 ms). A body with more (a legitimate one
-- has a few hundred) goes on unscanned: the services' decoder refuses one nested too deeply with a 400 as well
-- (llmaas.common.server), and an Envoy worker is never held for long (1.5 million objects took a second).
local MAX_SCAN_STEPS = 100000

local ERROR_HEADER = "x-llmaas-error"
local TRANSCODE_HEADER = "x-llmaas-transcode-error"
local STATUS_HEADER = "x-llmaas-http-status"
-- Marks a reply this filter made (dynamic metadata, which local_reply_config's mappers can see and clients cannot
-- set): no mapper rewrites it.
local EDGE_METADATA = "llmaas.edge"

local find, byte, format, gsub, sub, min = string.find, string.byte, string.format, string.gsub, string.sub, math.min

local function json_string(s)
  return '"' .. gsub(s, '[%c"\\]', function(c)
    return format("\\u%04x", byte(c))
  end) .. '"'
end

local function error_body(message, code, param, type_)
  return format('{"error":{"message":%s,"type":"%s","param":%s,"code":"%s"}}', json_string(message),
    type_ or "invalid_request_error", param and json_string(param) or "null", code)
end

local function reject(request_handle, status, message, code)
  request_handle:streamInfo():dynamicMetadata():set(EDGE_METADATA, "reply", "1")
  request_handle:respond({[":status"] = tostring(status), ["content-type"] = "application/json"},
    error_body(message, code))
end

local TOO_LARGE = format("The request body is too large: at most %d bytes (%d MiB) are accepted.",
  MAX_BODY_BYTES, math.floor(MAX_BODY_BYTES / 1048576))

-- Lua's pattern classes cost about 30 ns a byte; plain finds (memchr) almost nothing: both checks use plain finds only.

-- How many times `char` occurs in `s`, counting on from `n` and stopping once past `limit`.
local function count_up_to(s, char, n, limit)
  local pos = 1
  while n <= limit do
    local i = find(s, char, pos, true)
    if i == nil then
      break
    end
    n = n + 1
    pos = i + 1
  end
  return n
end

-- True when there are at most `limit` opening brackets (in strings or not): then nothing can nest deeper. Most
-- requests stop here.
local function few_brackets(s, limit)
  return count_up_to(s, "[", count_up_to(s, "{", 0, limit), limit) <= limit
end

-- True when brackets nest deeper than `limit` outside strings. Keeps the position of the next occurrence of each of
-- { } [ ] and the next quote, so each byte is looked at by memchr about once per character sought.
local function too_deep(s, limit)
  local none = #s + 1
  local function after(c, from)
    return find(s, c, from, true) or none
  end
  local open_o, close_o, open_a, close_a, quote = after("{", 1), after("}", 1), after("[", 1), after("]", 1),
    after('"', 1)
  local depth, steps = 0, 0
  while true do
    local i = min(open_o, close_o, open_a, close_a, quote)
    steps = steps + 1
    if steps > MAX_SCAN_STEPS then
      return false
    end
    if i == none then
      return false
    end
    if i == quote then
      -- The closing quote: the next one not escaped (preceded by an even number of backslashes).
      local k = i
      while true do
        k = find(s, '"', k + 1, true)
        if k == nil then
          return false -- unterminated: the transcoder reports the malformed JSON
        end
        local b = k - 1
        while byte(s, b) == 92 do
          b = b - 1
        end
        if (k - 1 - b) % 2 == 0 then
          break
        end
      end
      local pos = k + 1
      quote = after('"', pos)
      if open_o < pos then open_o = after("{", pos) end
      if close_o < pos then close_o = after("}", pos) end
      if open_a < pos then open_a = after("[", pos) end
      if close_a < pos then close_a = after("]", pos) end
    elseif i == open_o or i == open_a then
      depth = depth + 1
      if depth > limit then
        return true
      end
      if i == open_o then open_o = after("{", i + 1) else open_a = after("[", i + 1) end
    else
      depth = depth - 1
      if i == close_o then close_o = after("}", i + 1) else close_a = after("]", i + 1) end
    end
  end
end

-- A misspelled or unimplemented field must be a 400, but the transcoder drops JSON fields its message does not have
-- without a word (it has no strict mode). So the edge lists the body's keys in KEYS_HEADER (the top level's, and the
-- nested objects' one level in) and the service compares them with the request message's fields
-- (llmaas.common.json_fields). Top-level keys past MAX_KEYS are listed as "+" (refused there as too many); a body
-- scanned past MAX_SCAN_STEPS goes on without the list (unchecked).
local KEYS_HEADER = "x-llmaas-json-keys"
local MAX_KEYS = 128
local MAX_KEY_LENGTH = 64

-- Position of the quote closing the string whose opening quote is at `i`, and the scan steps it took (each escaped
-- quote skipped is one): nil when unterminated or when past `budget` steps.
local function closing_quote(s, i, budget)
  local k, steps = i, 0
  while true do
    k = find(s, '"', k + 1, true)
    steps = steps + 1
    if k == nil or steps > budget then
      return nil, steps
    end
    local b = k - 1
    while byte(s, b) == 92 do
      b = b - 1
    end
    if (k - 1 - b) % 2 == 0 then
      return k, steps
    end
  end
end

-- The first byte at or after `i` that is not JSON whitespace (nor a colon, if `colon`), looked at byte by byte and
-- for at most MAX_GAP bytes: nil past that (the body goes on unchecked) or at the end.
local MAX_GAP = 256
local function next_token(s, i, colon)
  for j = i, min(#s, i + MAX_GAP) do
    local c = byte(s, j)
    if c ~= 32 and c ~= 9 and c ~= 10 and c ~= 13 and not (colon and c == 58) then
      return j, c
    end
  end
  return nil
end

-- The keys of a JSON object, comma-joined: every top-level key, then the keys of the objects one level in, each named
-- by its path the first time it shows ("stream_options.include_usage", "messages[2].nmae": a key repeated in later
-- messages is listed once), at most MAX_NESTED_KEYS of those (past that, nested keys go unchecked). nil when `s` is
-- not an object, is malformed or is too costly to scan. In an object, strings alternate key and value, except that a
-- value may be a container or a literal: what follows each key's colon says which, so the next key is known without
-- looking at commas (a token array's thousands of commas cost nothing).
local MAX_NESTED_KEYS = 32
local function body_keys(s)
  local first, opening = next_token(s, 1, false)
  if first == nil or opening ~= 123 then
    return nil
  end
  local none = #s + 1
  local function after(c, from)
    return find(s, c, from, true) or none
  end
  local from = first + 1
  local open_o, close_o, open_a, close_a, quote = after("{", from), after("}", from), after("[", from),
    after("]", from), after('"', from)
  local depth, steps = 1, 0
  -- Per depth: is the container an object, does it expect a key next, its path (depths 2 and 3 only), the key whose
  -- value opens next (depth 1), the index of the last object in an array (depth 2).
  local object, expect, label, pending, index = {true}, {true}, {}, nil, -1
  local keys, n, nested, seen = {}, 0, 0, {}
  while true do
    local i = min(open_o, close_o, open_a, close_a, quote)
    steps = steps + 1
    if steps > MAX_SCAN_STEPS or i == none then
      return nil
    end
    if i == quote then
      local k, used = closing_quote(s, i, MAX_SCAN_STEPS - steps)
      steps = steps + used
      if k == nil then
        return nil
      end
      if object[depth] then
        if expect[depth] then
          local key = sub(s, i + 1, min(k - 1, i + MAX_KEY_LENGTH))
          local escaped = find(key, "\\", 1, true)
          local v, c = next_token(s, k + 1, true)
          if v == nil then
            return nil
          end
          if depth == 1 then
            if escaped then
              return nil -- an escaped key ("mod\u0065l"): what it means is the transcoder's to decode; unchecked
            end
            n = n + 1
            if n <= MAX_KEYS then
              keys[#keys + 1] = gsub(key, "[^%w_%-]", "?") -- "a.b" or "a[0]" would read as a nested path
            elseif n == MAX_KEYS + 1 then
              keys[#keys + 1] = "+"
            end
            pending = keys[#keys]
          elseif label[depth] ~= nil and not escaped and c ~= 110 and nested < MAX_NESTED_KEYS then
            -- (a null value is the field's absence, as the transcoder reads it: "refusal": null is not listed)
            local clean = gsub(key, "[^%w_%-]", "?")
            local kind = (depth == 3 and label[2] .. "[]" or label[2]) .. "." .. clean
            if not seen[kind] then
              seen[kind] = true
              nested = nested + 1
              keys[#keys + 1] = label[depth] .. "." .. clean
            end
          end
          expect[depth] = not (c == 34 or c == 123 or c == 91) -- a string or a container comes next: not a key
        else
          expect[depth] = true -- that string was the value
        end
      end
      local pos = k + 1
      quote = after('"', pos)
      if open_o < pos then open_o = after("{", pos) end
      if close_o < pos then close_o = after("}", pos) end
      if open_a < pos then open_a = after("[", pos) end
      if close_a < pos then close_a = after("]", pos) end
    elseif i == open_o or i == open_a then
      local is_object = i == open_o
      depth = depth + 1
      object[depth], expect[depth], label[depth] = is_object, is_object, nil
      if depth == 2 then
        label[2], index = pending, -1
      elseif depth == 3 and is_object and not object[2] and label[2] ~= nil then
        index = index + 1
        label[3] = label[2] .. "[" .. index .. "]"
      end
      if is_object then open_o = after("{", i + 1) else open_a = after("[", i + 1) end
    else
      depth = depth - 1
      if depth == 0 then
        return table.concat(keys, ",")
      end
      if object[depth] then
        expect[depth] = true -- a container value ended
      end
      if i == close_o then close_o = after("}", i + 1) else close_a = after("]", i + 1) end
    end
  end
end

-- Request headers become the gRPC metadata of the call the transcoder makes, and gRPC refuses (a bodiless 500, found
-- by the fuzzer) what HTTP allows: a name outside [0-9a-z_.-] (e.g. "a$b"), a "-bin" value that is not base64, a
-- "grpc-timeout" it cannot parse. A REST client has no business setting gRPC's own headers either (grpc-timeout: 1n
-- cut every call short). Such headers mean nothing to the API, so they are dropped, as any unknown header is ignored;
-- a gRPC client keeps its grpc-* and -bin metadata. Cost, measured in Envoy on this 2-core machine: ~5 us for an SDK
-- request's 14 headers (0.4 us a header, mostly Envoy's header iteration), the verdicts being memoized per name
-- (pattern matching, not compiled by LuaJIT, was three times that).
local MAX_VERDICTS = 4096 -- names remembered per worker; past it, every other name is matched each time
local verdicts, verdict_count = {}, 0 -- name -> 1 invalid, 2 gRPC's own (dropped unless gRPC), 0 kept

local function verdict(name)
  local v = verdicts[name]
  if v ~= nil then
    return v
  end
  if byte(name, 1) == 58 then
    v = 0 -- ":": pseudo-headers are HTTP/2's, not metadata
  elseif find(name, "[^%l%d_%.%-]") then
    v = 1
  elseif find(name, "^grpc%-") or find(name, "%-bin$") then
    v = 2
  else
    v = 0
  end
  if verdict_count < MAX_VERDICTS then
    verdicts[name] = v
    verdict_count = verdict_count + 1
  end
  return v
end

local function drop_non_metadata_headers(headers, grpc)
  local drop = nil
  for name, _ in pairs(headers) do
    local v = verdict(name)
    if v == 1 or (v == 2 and not grpc) then
      drop = drop or {}
      drop[#drop + 1] = name
    end
  end
  if drop ~= nil then
    for _, name in ipairs(drop) do
      headers:remove(name)
    end
  end
end

-- A /v1/completions body with messages and without a prompt (the keys body_keys listed).
local function chat_shaped_completion(path, keys)
  local bare = string.match(path or "", "^([^?]*)")
  if bare ~= "/v1/completions" and bare ~= "/v1/completions/" then
    return false
  end
  local listed = "," .. keys .. ","
  return find(listed, ",messages,", 1, true) ~= nil and find(listed, ",prompt,", 1, true) == nil
end

function envoy_on_request(request_handle)
  local headers = request_handle:headers()
  local grpc = find(headers:get("content-type") or "", "application/grpc", 1, true) == 1
  drop_non_metadata_headers(headers, grpc)
  if not grpc then
    headers:remove(KEYS_HEADER) -- only ever this filter's
  end
  if grpc then
    -- A gRPC client (internal callers through the gateway): its protobuf body and its grpc-status are its own.
    request_handle:streamInfo():dynamicMetadata():set(EDGE_METADATA, "grpc", "1")
    return
  end
  if headers:get("content-length") == nil and headers:get("transfer-encoding") == nil then
    return -- no body
  end
  if find(headers:get("content-type") or "", "multipart/form-data", 1, true) == 1 then
    return -- an upload (audio): not JSON, its bytes mean nothing to the depth scan
  end
  if headers:get(":path") == "/v1/files" then
    return -- a file upload: never read before auth (gateway/envoy.yaml.j2), whatever its content type
  end
  -- Already read whole by the buffer filter before this one, within the body limit.
  local body = request_handle:body()
  if body == nil then
    return
  end
  local size = body:length()
  local text = body:getBytes(0, size)
  -- Fewer bytes than two per level cannot nest too deep.
  if size > 2 * MAX_JSON_DEPTH and not few_brackets(text, MAX_JSON_DEPTH) and too_deep(text, MAX_JSON_DEPTH) then
    reject(request_handle, 400, format("The request body's JSON is nested too deeply: at most %d levels of objects "
      .. "and arrays are accepted.", MAX_JSON_DEPTH), "json_too_deep")
    return
  end
  local keys = body_keys(text)
  if keys ~= nil and keys ~= "" then
    local fresh = request_handle:headers() -- a fresh handle: the body was read since `headers`
    fresh:replace(KEYS_HEADER, keys)
    local path = fresh:get(":path")
    if chat_shaped_completion(path, keys) then
      -- The reference's /v1/completions takes "the same format as /v1/chat/completions with messages" and answers
      -- in that format: such a body (messages, no prompt) is served as the chat completion it is. The transcoder,
      -- after this filter, maps the path to its method (every REST path shares the catch-all route until then); a
      -- query string stays (the transcoder reads fields from it too).
      fresh:replace(":path", "/v1/chat/completions" .. (string.match(path, "(%?.*)$") or ""))
    end
  end
end

-- What a JSON value of the wrong type should have been, by the transcoder's name of the field's type.
local EXPECTED = {
  TYPE_STRING = "a string", TYPE_BYTES = "a string", TYPE_BOOL = "a boolean", TYPE_ENUM = "one of the allowed values",
  TYPE_DOUBLE = "a number", TYPE_FLOAT = "a number", TYPE_INT32 = "an integer", TYPE_INT64 = "an integer",
  TYPE_UINT32 = "a non-negative integer", TYPE_UINT64 = "a non-negative integer", TYPE_SINT32 = "an integer",
  TYPE_SINT64 = "an integer", TYPE_FIXED32 = "an integer", TYPE_FIXED64 = "an integer", TYPE_SFIXED32 = "an integer",
  TYPE_SFIXED64 = "an integer",
}

-- The transcoder's message names the field path and the type; only those two (proto field names are OpenAI's
-- parameter names) reach the client, never the value or the proto type.
local function transcode_error(message)
  local path, value, kind = string.match(message, "^([%w_%.%[%]]*): invalid value (.*) for type (%S+)$")
  if path ~= nil then
    local expected = EXPECTED[kind] or (find(kind, "^type%.googleapis%.com/") and "an object" or "another type")
    if path == "" then
      return error_body("The request body must be a JSON object.", "invalid_type")
    end
    -- An integer, but beyond the field's range (e.g. max_tokens 99999999999 for an int32): say so, not "expected
    -- an integer". A negative one for an unsigned field keeps "expected a non-negative integer".
    local digits = string.match(value, '^"?(%-?%d+)"?$')
    if digits ~= nil and find(kind, "INT", 1, true) and not (byte(digits, 1) == 45 and find(kind, "UINT", 1, true)) then
      local above = byte(digits, 1) ~= 45
      return error_body(format("Invalid '%s': integer %s the parameter's %s value.", path,
        above and "above" or "below", above and "maximum" or "minimum"),
        above and "integer_above_max_value" or "integer_below_min_value", path)
    end
    return error_body(format("Invalid type for '%s': expected %s.", path, expected), "invalid_type", path)
  end
  if find(message, "Root element must be a message", 1, true) then
    return error_body("The request body must be a JSON object.", "invalid_type")
  end
  if find(message, "Message too deep", 1, true) then
    return error_body(format("The request body's JSON is nested too deeply: at most %d levels of objects and arrays "
      .. "are accepted.", MAX_JSON_DEPTH), "json_too_deep")
  end
  -- Valid JSON the transcoder still refuses (found by the fuzzer; each was "not valid JSON" before).
  local where = string.match(message, "^([%w_%.%[%]]+): Proto fields must have a name")
  if where ~= nil or find(message, "^: Proto fields must have a name") then
    return error_body("The request body has an empty key" .. (where and format(" in '%s'", where) or "")
      .. ": every key must name a parameter.", "invalid_value", where)
  end
  if find(message, "exceeds the range of", 1, true) then
    return error_body("A number in the request body is beyond the range of a double.", "invalid_value")
  end
  if find(message, "surrogate", 1, true) or find(message, "unicode code point", 1, true) then
    return error_body("The request body's JSON has an invalid \\u escape (a lone UTF-16 surrogate or a code point "
      .. "beyond Unicode).", "invalid_json")
  end
  local field = string.match(message, "^([%w_%.%[%]]+): ")
  if field ~= nil then
    return error_body(format("Invalid value for '%s'.", field), "invalid_value", field)
  end
  return error_body("We could not parse the JSON body of your request: it is not valid JSON. (Check quotes, commas "
    .. "and brackets; the body must be one JSON object.)", "invalid_json")
end

function envoy_on_response(response_handle)
  local edge = response_handle:streamInfo():dynamicMetadata():get(EDGE_METADATA)
  if edge ~= nil and edge["grpc"] == "1" then
    return -- a gRPC client reads grpc-status (e.g. UNIMPLEMENTED for a path the gateway does not route)
  end
  local headers = response_handle:headers()
  local err = headers:get(ERROR_HEADER)
  if err ~= nil then
    local status = headers:get(STATUS_HEADER)
    if status ~= nil then
      headers:remove(STATUS_HEADER)
      if find(status, "^4%d%d$") then
        headers:replace(":status", status) -- a status gRPC has no code for (llmaas.common.errors)
      end
    end
    headers:remove(ERROR_HEADER)
    headers:remove("grpc-status")
    headers:remove("grpc-message")
    headers:remove("grpc-accept-encoding")
    headers:replace("content-type", "application/json")
    response_handle:body(true):setBytes(err)
    return
  end
  if headers:get(TRANSCODE_HEADER) ~= nil then
    headers:remove(TRANSCODE_HEADER)
    headers:replace("content-type", "application/json")
    local body = response_handle:body(true) -- `headers` must not be used after this
    body:setBytes(transcode_error(body:getBytes(0, body:length())))
    return
  end
  local grpc_message = headers:get("grpc-message")
  if grpc_message ~= nil and headers:get("grpc-status") == "8"
      and find(grpc_message, "larger than max", 1, true) then
    -- A service's gRPC message limit (sized to the body limit: see llmaas.common.server) refused it.
    headers:replace(":status", "413")
    headers:replace("content-type", "application/json")
    headers:remove("grpc-status")
    headers:remove("grpc-message")
    headers:remove("grpc-accept-encoding")
    response_handle:body(true):setBytes(error_body(TOO_LARGE, "request_too_large"))
    return
  end
  headers:remove("grpc-status")
  headers:remove("grpc-message")
  headers:remove("grpc-accept-encoding")
end
