from digits.platform.memory import COMPUTE_BLOCK_BYTES
from digits.platform.rpc import run
from services.inference.server import main

run(main, large_block_bytes=COMPUTE_BLOCK_BYTES)  # the model's temporaries stay in the heap between batches
