"""A shop's session handling as any Flask app writes it: Flask-Session on redis-py, pointed at
one steadfast node's Redis port (REDIS_URL). Nothing here knows about steadfast. Routes:
POST /login?user=, POST /basket?item=, GET /basket, POST /logout."""
import os

import redis
from flask import Flask, jsonify, request, session
from flask_session import Session

app = Flask(__name__)
app.config.update(
    SECRET_KEY="test secret",
    SESSION_TYPE="redis",
    SESSION_REDIS=redis.from_url(os.environ["REDIS_URL"]),
    SESSION_KEY_PREFIX="flask:",
    SESSION_PERMANENT=True,
    PERMANENT_SESSION_LIFETIME=3600,
)
Session(app)


@app.post("/login")
def login():
    session.clear()
    session["user"] = request.args["user"]
    session["basket"] = []
    return jsonify(user=session["user"])


@app.post("/basket")
def add():
    if not session.get("user"):
        return jsonify(error="not logged in"), 401
    session["basket"] = session["basket"] + [request.args["item"]]
    return jsonify(basket=session["basket"])


@app.get("/basket")
def basket():
    return jsonify(user=session.get("user"), basket=session.get("basket", []))


@app.post("/logout")
def logout():
    session.clear()
    return jsonify(user=None)


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ["PORT"]))
