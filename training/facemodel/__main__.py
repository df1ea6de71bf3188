from .describe import main

main()
