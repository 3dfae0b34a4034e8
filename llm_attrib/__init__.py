"""llm_attrib: which training data made a Hugging Face language model say this, and what is each example worth.

Sign convention (everywhere in this library): a **positive score means the training example raises the
query's measurement** ``log Pr(completion | prompt)``; removing it would lower it.
"""

__version__ = "0.1.0"
