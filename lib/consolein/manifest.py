metadata(description="Non-blocking reads from the REPL's serial port (sys.stdin).",
         version="0.1.0")
module("consolein.py")
