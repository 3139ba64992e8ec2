"""The official `openai` package against the compatible endpoint where things go wrong: it
retrieves the model, is refused by name for parameters a stage cannot honour, gets a 400 (not a
422) for a body of the wrong type, and does not retry a failed performance although its default
retries are on. Prints what it saw as one JSON object for tests/all/openai_python_errors.rs.

Usage: openai_errors.py BASE_URL TOKEN MODEL
"""
import json
import sys

import openai
from openai import OpenAI

base, token, model = sys.argv[1:4]
# The SDK's defaults: two retries on 5xx unless the server says otherwise.
client = OpenAI(base_url=base + "/v1", api_key=token, timeout=120)
question = [{"role": "user", "content": "What is in a.txt?"}]
out = {"retrieved": client.models.retrieve(model).id}

try:
    client.models.retrieve("no-such-stage")
    out["retrieve_missing"] = "accepted"
except openai.NotFoundError as e:
    out["retrieve_missing"] = e.status_code


def refused(**extra):
    try:
        client.chat.completions.create(model=model, messages=question, **extra)
        return "accepted"
    except openai.BadRequestError as e:
        return {"status": e.status_code, "param": e.param, "message": e.message}


tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
out["tools"] = refused(tools=[tool])
out["n"] = refused(n=2)
out["response_format"] = refused(response_format={"type": "json_object"})
out["wrong_type"] = refused(extra_body={"messages": "just a string"})

try:
    client.chat.completions.create(model=model, messages=question)
    out["failed"] = "accepted"
except openai.APIStatusError as e:
    out["failed"] = {
        "status": e.status_code,
        "should_retry": e.response.headers.get("x-should-retry"),
        "message": e.message,
    }

print(json.dumps(out))
