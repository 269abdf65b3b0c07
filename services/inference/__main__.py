from digits.platform.rpc import run
from services.inference.server import main

run(main)
