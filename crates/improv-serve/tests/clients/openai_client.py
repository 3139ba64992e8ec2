"""Talks to improv serve's OpenAI-compatible endpoint with the official `openai` package, the way
any OpenAI client would, and prints what it saw as one JSON object for tests/all/openai_python.rs.

Usage: openai_client.py BASE_URL TOKEN MODEL
"""
import json
import sys

import openai
from openai import OpenAI

base, token, model = sys.argv[1:4]
client = OpenAI(base_url=base + "/v1", api_key=token, max_retries=0, timeout=120)
question = [{"role": "user", "content": "What is in a.txt?"}]
out = {"models": [m.id for m in client.models.list()]}

reply = client.chat.completions.create(model=model, messages=question)
out["id"] = reply.id
out["object"] = reply.object
out["content"] = reply.choices[0].message.content
out["finish_reason"] = reply.choices[0].finish_reason
out["total_tokens"] = reply.usage.total_tokens

parts, finish, usage, chunks = [], None, None, 0
stream = client.chat.completions.create(
    model=model, messages=question, stream=True, stream_options={"include_usage": True}
)
for chunk in stream:
    chunks += 1
    if chunk.usage is not None:
        usage = chunk.usage.total_tokens
    for choice in chunk.choices:
        if choice.delta.content:
            parts.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
out["stream_content"] = "".join(parts)
out["stream_finish_reason"] = finish
out["stream_total_tokens"] = usage
out["stream_chunks"] = chunks

try:
    client.chat.completions.create(model="no-such-stage", messages=question)
    out["wrong_model"] = "accepted"
except openai.NotFoundError as e:
    out["wrong_model"] = e.status_code

try:
    OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0).models.list()
    out["wrong_token"] = "accepted"
except openai.AuthenticationError as e:
    out["wrong_token"] = e.status_code

print(json.dumps(out))
