# token-direct command-line image, CPU build of torch: `docker run --rm IMAGE info`, or the ingest job of
# docker-compose.yml and docker-compose.cluster.yml. The GPU image (a CUDA build of torch) is Dockerfile.gpu.
#   docker build -t token-direct .
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

# torch first, pinned to its CPU build (on Linux a plain `pip install torch` is the CUDA build, gigabytes more).
RUN pip install torch==2.13.0+cpu \
       --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple

WORKDIR /app
# The dependencies, read from pyproject.toml alone: a change to the code does not install them again.
COPY pyproject.toml ./
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
       > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt
# Then the project, from the whole tree (.dockerignore leaves out what the image must not hold), and a first run.
COPY . .
RUN pip install --no-deps . && tokendirect --help > /dev/null

ENTRYPOINT ["tokendirect"]
CMD ["--help"]
