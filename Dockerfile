# A CPU image that serves one llmstart bundle:
#   docker build -t nli-server --build-arg BUNDLE=path/to/bundle .
#   docker run -p 8000:8000 -e LLMSTART_API_KEY=change-me nli-server
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY . /src
# the versions the tests ran with (onnxruntime, the ONNX backend, is one of the package's requirements)
RUN pip install -c /src/constraints.txt /src && useradd --create-home server
ARG BUNDLE=bundle
COPY ${BUNDLE} /bundle
USER server
EXPOSE 8000
# Inside the container bind every interface: the container's network is the boundary. Set LLMSTART_API_KEY to require a key.
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"
CMD ["llmstart", "serve", "--model", "/bundle", "--host", "0.0.0.0", "--port", "8000"]
