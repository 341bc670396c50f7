"""A tool in the AIOS/Cerebrum folder layout: a class with run(params) and get_tool_call_format()."""


class Bmi:
    def run(self, params):
        bmi = params["weight_kg"] / params["height_m"] ** 2
        band = "underweight" if bmi < 18.5 else "normal" if bmi < 25 else "overweight" if bmi < 30 else "obese"
        return {"bmi": round(bmi, 1), "band": band}

    def get_tool_call_format(self):
        return {
            "type": "function",
            "function": {
                "name": "bmi",
                "description": "Compute the body-mass index from a weight in kilograms and a height in metres.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "weight_kg": {"type": "number", "exclusiveMinimum": 0},
                        "height_m": {"type": "number", "exclusiveMinimum": 0},
                    },
                    "required": ["weight_kg", "height_m"],
                },
            },
        }
