metadata(description="Feeds a started watchdog from a timer while the application is stopped.",
         version="0.1.0")
module("wdthold.py")
