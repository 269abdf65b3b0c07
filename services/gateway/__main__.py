from digits.rpc import run
from services.gateway.server import main

run(main)
