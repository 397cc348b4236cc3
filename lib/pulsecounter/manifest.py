metadata(description="Pulse input counter on a GPIO interrupt (flow meters), debounced, with "
         "edge timestamp.", version="0.2.0")
module("pulsecounter.py")
