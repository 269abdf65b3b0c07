from digits.platform.rpc import run
from services.gateway.server import main

run(main)
