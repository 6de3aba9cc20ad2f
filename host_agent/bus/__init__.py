"""The broker and the agent's connection to it: device messages in, acknowledged after commit; commands out."""
