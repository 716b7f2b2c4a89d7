"""The policy: Qwen-VL model + value head (`model`), prompts (`prompting`), constrained decoding
(`constrained`), the value head (`value_head`) and the tiny offline models (`tiny`)."""
