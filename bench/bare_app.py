"""The ceiling: a bare Flask route returning a small JSON dict, served like Cueline."""

from flask import Flask

app = Flask(__name__)


@app.get("/bare")
def bare():
    return {"status": "ok", "service": "bare", "n": 1}


@app.get("/health")
def health():
    return {"status": "healthy"}
