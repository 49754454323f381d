# token-direct command-line image: `docker run --rm IMAGE info`, or the `ingest` job in docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# poppler-utils: pdftoppm for PDF pages. Text queries are drawn in DejaVu Sans (fonts-dejavu-core), with Noto fonts
# for the scripts it lacks (fonts-noto-core, fonts-noto-cjk); libfribidi0 lets Pillow lay out right-to-left text.
RUN apt-get update \
    && apt-get install -y --no-install-recommends poppler-utils fonts-dejavu-core fonts-noto-core fonts-noto-cjk \
       libfribidi0 \
    && rm -rf /var/lib/apt/lists/*

# CPU build of torch. For a GPU image, start from a CUDA base image and install a CUDA build instead,
# e.g. --index-url https://download.pytorch.org/whl/<cuda tag> (see pytorch.org for the tag that fits your driver).
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /app
COPY pyproject.toml README.md ./
COPY config ./config
COPY core ./core
COPY ingest ./ingest
COPY search ./search
COPY decode ./decode
COPY cli ./cli
RUN pip install .

ENTRYPOINT ["tokendirect"]
CMD ["--help"]
