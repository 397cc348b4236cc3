metadata(description="Pulse input counted by an RP2040 PIO state machine (minimum-width "
         "filter in the program), with edge timestamp.", version="0.1.0")
module("piocounter.py")
