"""Tools built on training, above `gdlab.train`: learning-rate advice (`rates`), many rates at
once (`sweep`), the loss over two parameters (`surface`) and descent on a typed-in function
(`descend`). They use the prepared problem and the training pieces; nothing below imports them.
"""
