# The edge: Envoy 1.40 with the gateway's descriptor and Lua filter at the paths the rendered config names
# (/app/gateway/...). The config itself is rendered at start by the llmaas image's `python -m llmaas.stack.envoy`
# (an init container in the Helm chart, a one-shot service in compose): it holds the edge's service credential.
FROM envoyproxy/envoy:v1.40-latest
COPY gateway/llmaas.pb gateway/openai_errors.lua /app/gateway/
EXPOSE 8080 9902
CMD ["envoy", "-c", "/etc/envoy/envoy.yaml", "--log-level", "warn"]
