metadata(description="Eastron SDM120/SDM630 energy meters: Modbus register maps.",
         version="0.1.0")
module("sdm.py")
