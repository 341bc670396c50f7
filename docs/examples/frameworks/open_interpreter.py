"""Open Interpreter (``open-interpreter``): a plain question, its model the kernel's through /v1 (LiteLLM's
``openai/`` route with an ``api_base``), with code execution off — it is offered no language to run code in.

Open Interpreter cannot install beside the kernel's pins (it needs psutil<6); ``make install`` gives it a
virtual environment of its own, ``.venv-interpreter``. Run against a running kernel:
``AIOS_KERNEL_URL=http://localhost:8000 .venv-interpreter/bin/python open_interpreter.py``.
"""

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # LiteLLM's own table, not one fetched online

from interpreter import interpreter  # noqa: E402


def main() -> None:
    interpreter.offline = True  # no calls home
    interpreter.llm.model = "openai/" + os.environ.get("AIOS_MODEL", "HuggingFaceTB/SmolLM2-135M-Instruct")
    interpreter.llm.api_base = os.environ.get("AIOS_KERNEL_URL", "http://localhost:8000") + "/v1"
    interpreter.llm.api_key = os.environ.get("AIOS_TOKEN", "no-token-needed")
    interpreter.llm.supports_functions = False
    interpreter.llm.context_window, interpreter.llm.max_tokens = 2048, 32
    interpreter.auto_run = False
    interpreter.computer.languages = []  # code execution off
    messages = interpreter.chat("What is the capital of France? Answer in one sentence.", display=False,
                                stream=False)
    print("reply:", messages[-1]["content"])


if __name__ == "__main__":
    main()
