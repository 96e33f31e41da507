FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN useradd --system --uid 10001 igregistry && mkdir -p /data/tokens \
    && chown igregistry /data/tokens
USER igregistry
EXPOSE 8000
CMD ["gunicorn", "igregistry.wsgi", "-c", "gunicorn.conf.py"]
