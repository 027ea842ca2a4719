# ctscribe CPU image:
#   docker build -t ctscribe .
#   docker run -e CTSCRIBE_AUTH=user:password -p 127.0.0.1:7860:7860 ctscribe
# Inside the container the app listens on 0.0.0.0, so `ctscribe serve` requires credentials (CTSCRIBE_AUTH).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_DATASETS_OFFLINE=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    ANONYMIZED_TELEMETRY=False \
    TOKENIZERS_PARALLELISM=false \
    OMP_WAIT_POLICY=PASSIVE \
    CTSCRIBE_CONFIG_DIR=/app/configs \
    CTSCRIBE_HOME=/home/ctscribe/.cache/ctscribe

# Java runs METEOR 1.5 and the PTB tokenizer for `ctscribe evaluate`.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless curl \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 ctscribe
WORKDIR /app
COPY requirements.txt requirements-nodeps.txt ./
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && pip install -r requirements.txt \
    && pip install --no-deps -r requirements-nodeps.txt
# Optional llama.cpp text backend (see requirements-llamacpp.txt): docker build --build-arg WITH_LLAMACPP=1 .
ARG WITH_LLAMACPP=0
COPY requirements-llamacpp.txt ./
RUN if [ "$WITH_LLAMACPP" = 1 ]; then \
      apt-get update && apt-get install -y --no-install-recommends build-essential cmake libgomp1 \
      && CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAMA_CURL=OFF" \
         pip install -r requirements-llamacpp.txt \
      && apt-get purge -y build-essential cmake && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*; \
    fi
COPY pyproject.toml README.md ./
COPY vision ./vision
COPY retrieval ./retrieval
COPY chatapp ./chatapp
COPY configs ./configs
RUN pip install --no-deps .

USER 1000:1000
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:7860/"]
# Inside the container the app must listen on all interfaces; publish the port on the host's loopback only
# (see the build comment) or configure app.auth.
ENTRYPOINT ["ctscribe"]
CMD ["serve", "--host", "0.0.0.0"]
