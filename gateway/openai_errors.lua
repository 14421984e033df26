-- Moves the OpenAI error JSON that a service put in the `x-llmaas-error` gRPC metadata into the HTTP body.
-- Envoy's transcoder has already mapped the gRPC status to the HTTP status; without this the body would be empty.
local ERROR_HEADER = "x-llmaas-error"

function envoy_on_request(request_handle)
end

function envoy_on_response(response_handle)
  local headers = response_handle:headers()
  local err = headers:get(ERROR_HEADER)
  if err == nil then
    return
  end
  headers:remove(ERROR_HEADER)
  headers:remove("grpc-status")
  headers:remove("grpc-message")
  headers:replace("content-type", "application/json")
  response_handle:body(true):setBytes(err)
end
