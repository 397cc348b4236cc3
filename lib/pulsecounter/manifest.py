metadata(description="Pulse input counter (flow meters) with edge timestamp.", version="0.1.0")
module("pulsecounter.py")
